"""The model runtime every host shares (models, data, trainer, evaluation) and its assembly."""
