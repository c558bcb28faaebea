"""banet.machine.results_stem: the one name of a results file, ``<kind>_<machine>_<date>``."""

import datetime

from banet.machine import cpu_name, results_stem, slug


def test_results_stem_names_kind_machine_and_date():
    assert results_stem("e2e", "Intel(R) Xeon(R) Processor", "2026-12-01") == "e2e_Intel-R-Xeon-R-Processor_2026-12-01"
    assert results_stem("roofline", "NVIDIA H200", "2026-12-05") == "roofline_NVIDIA-H200_2026-12-05"
    # no kind: benchmarks.run's main tables, named as the files already in benchmarks/results
    assert results_stem(None, "AMD EPYC", "2026-11-25") == "AMD-EPYC_2026-11-25"


def test_results_stem_defaults_to_this_cpu_and_today():
    assert results_stem("memory") == f"memory_{slug(cpu_name())}_{datetime.date.today().isoformat()}"
