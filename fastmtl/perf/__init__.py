"""Performance tools: op and model benchmarks (``fastmtl bench``), params/GMACs/throughput
(``fastmtl profile``), the weighting-overhead table, and the GPU-free compile gate and traffic model
(``fastmtl gate``, ``fastmtl traffic``, :mod:`fastmtl.perf.aot`)."""
