"""`medjson seeds`: what holds across training seeds, from DVC experiments that differ only by seed.

Queue the runs of a setting as a user would, then read them together:

    dvc exp run --queue evaluate@grpo -n s7   -S grpo.seed=7      # GRPO's own seed: the SFT model stays
    dvc exp run --queue evaluate@grpo -n s123 -S grpo.seed=123
    dvc queue start -j 1
    medjson seeds --workspace . --setting "lr 1e-4=HEAD,s7,s123" \\
        [--setting "KL 0.2=kl-s42,kl-s7,kl-s123"] --out seeds

A setting names its runs: experiment names or git revisions (``HEAD``: the workspace's committed
run). Every run of a setting must have the same params but for ``seed`` and ``grpo.seed``, a seed of
its own, and the stages read here (``evaluate`` of base, SFT and GRPO, ``calibrate@grpo``, and what
they stand on) up to date at its revision; anything else is refused, naming the run and the difference.
(``evaluate@grpo`` as the target re-runs only GRPO's side up to its free answers: the constrained
evaluation and the benchmarks are not read here.)

For each setting, phase comparison (``compare``'s pairs, by ``compare``'s own tests) and measure
(accuracy, valid JSON, schema pass, the stated confidence's Brier error, the largest share of answers
naming one letter): each
seed's difference and verdict, their mean with a 95% interval over seeds and questions together
(``medjson.commands.seeds.stats`` says why that method), and how many seeds agree. With several settings,
the choice between them: each setting's mean GRPO reward on the calibration pool (``SELECTION_POOL``),
never the evaluation pool, with the standard error of each difference (``SELECTION_RULE``).

Writes ``seeds.json`` (for ``dvc metrics show``-style reading), ``seeds.md`` (the tables) and
``heldout_curves.png`` (every seed's held-out curves, overlaid, a colour per setting).
"""
