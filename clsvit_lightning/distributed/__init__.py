"""Training across GPUs: FSDP with one unit per transformer block, as a Lightning strategy, and
gradient clipping over FSDP shards (``fsdp.py``)."""
