"""Sweeps: sweep files and the runner (:mod:`.runner`), the SLURM launcher (:mod:`.slurm`, its options
:mod:`.slurm_options`), the results tables (:mod:`.report`) and the built-in sweeps (:mod:`.builtin`).
The sweep folder is the state: a rerun resumes."""
