"""Detection, alignment, embedding, classification and tracking: frame in, recognitions out."""
