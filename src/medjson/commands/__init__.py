"""What a user runs outside the pipeline: ``medjson <command>`` (or ``python -m medjson.commands.<name>``)."""
