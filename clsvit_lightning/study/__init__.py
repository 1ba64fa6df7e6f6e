"""Experiments made of stages: the pretrain -> probe -> report engine, and the demo, the CPU proxy
of the paper and the local sweep that run on it."""
