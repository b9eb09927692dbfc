"""Example tasks doing real work; run them with `runtime run` or queue them for a worker."""
