"""Output: encoding results with their parameters embedded, and the files they are written to."""
