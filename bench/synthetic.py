"""A synthetic MedMCQA-shaped source of any size, for timing `prepare` at full scale.

Rows follow the hub layout (`cop` 0..3) and mimic the real data's quirks at about
their real rates: a third `multi` questions, half without explanation, some repeated
question stems and some repeated options. Deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SUBJECTS = [
    "Anatomy",
    "Physiology",
    "Biochemistry",
    "Pathology",
    "Pharmacology",
    "Microbiology",
    "Medicine",
    "Surgery",
    "Pediatrics",
    "Gynaecology & Obstetrics",
    "Ophthalmology",
    "ENT",
    "Dental",
    "Psychiatry",
    "Forensic Medicine",
    "Social & Preventive Medicine",
    "Radiology",
    "Anaesthesia",
    "Orthopaedics",
    "Dermatology",
    "Skin",
]
WORDS = (
    "nerve artery vein muscle gland enzyme receptor hormone drug toxin bacterium virus fracture lesion "
    "syndrome tumour marker reflex ligament duct valve cell antibody vitamin"
).split()


def synthetic_row(index: int, rng: random.Random) -> dict:
    stem = index if rng.random() > 0.01 else rng.randrange(max(1, index))  # ~1% repeated stems
    words = " ".join(rng.choice(WORDS) for _ in range(12))
    options = [f"{rng.choice(WORDS)} {rng.randrange(1000)}" for _ in range(4)]
    if rng.random() < 0.005:
        options[3] = options[0]
    return {
        "id": f"synthetic-{index:06d}",
        "question": f"Question {stem}: which {words}?",
        "opa": options[0],
        "opb": options[1],
        "opc": options[2],
        "opd": options[3],
        "cop": rng.randrange(4),
        "choice_type": "multi" if rng.random() < 0.33 else "single",
        "exp": None
        if rng.random() < 0.47
        else f"Ans. {rng.choice('abcd')}. " + " ".join(rng.choice(WORDS) for _ in range(40)),
        "subject_name": rng.choice(SUBJECTS),
        "topic_name": None,
    }


def write_synthetic_source(path: Path | str, rows: int = 194_000, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for index in range(rows):
            f.write(json.dumps(synthetic_row(index, rng)) + "\n")
    return path
