"""What the training stages share: GRPO rewards, guards that stop a run gone wrong, training curves,
resumable checkpoints, and the import closure that ties a run to its code."""
