"""Small end-to-end studies (the demo, the CPU proxy of the paper): pretrain, probe, analyse, report."""
