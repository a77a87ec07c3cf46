"""Training data: readers, task-homogeneous batching, tokenisation, text hashes."""
