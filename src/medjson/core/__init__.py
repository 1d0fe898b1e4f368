"""The project's base layer, which imports nothing from the other layers: the prompt format, the one
parser of model output, prediction records and their scores, statistics, abstention, file I/O."""
