"""Pure geometry: rigid transforms, projection. No I/O, no randomness."""
