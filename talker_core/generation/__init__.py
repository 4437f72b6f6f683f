"""Generation: the flow-matching sampler (``flow_sampler``) and the autoregressive engine (``engine``)."""
