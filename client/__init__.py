"""Edge client: model loading, local data, the trainer runtime shared by every host."""
