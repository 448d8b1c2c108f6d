"""Performance tools: op benchmarks (``fastmtl bench``: :mod:`.cases` the case table, :mod:`.timing`,
:mod:`.report`, :mod:`.op_bench` the runner), model benchmarks (``fastmtl bench --models``,
:mod:`.model_bench`), params/GMACs/throughput (``fastmtl profile``, :mod:`.profile`), the
weighting-overhead table (:mod:`.weighting_overhead`), all three timing the trainer's step
(:mod:`.step_runner`, random inputs from :mod:`.inputs`), and the GPU-free compile gate and
traffic model (``fastmtl gate``, ``fastmtl traffic``, :mod:`fastmtl.perf.aot`)."""
