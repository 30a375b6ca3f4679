"""The data-parallel ranks: the worker, its placement on a cluster and its rendezvous."""
