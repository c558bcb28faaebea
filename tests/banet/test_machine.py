"""banet.machine: what this machine is, for results names and for where an INT8 record holds."""


def test_int8_units_are_read_from_the_cpu_flags():
    from banet.machine import int8_units

    assert int8_units("model name\t: X\nflags\t\t: fpu sse avx512f avx512_vnni amx_tile amx_int8\n", {}) == "amx_int8"
    assert int8_units("flags\t\t: fpu avx2 avx_vnni\n", {}) == "avx_vnni"
    assert int8_units("flags\t\t: fpu avx2\n", {}) == "none"
    assert int8_units("processor\t: 0\n") == "unknown"  # no x86 flags: not to be matched with an x86 CPU's "none"
    assert int8_units("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n") == "unknown"  # an ARM listing
    assert int8_units() in ("amx_int8", "avx512_vnni", "avx_vnni", "none", "unknown")


AMX_CPU = "model name\t: X\nflags\t\t: fpu avx2 avx_vnni avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8\n"


def test_a_onednn_isa_cap_is_read_as_onednn_reads_it():
    from banet.machine import isa_cap

    assert isa_cap({}) is None and isa_cap({"ONEDNN_MAX_CPU_ISA": "all"}) is None
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": " avx2 "}) == "AVX2"
    assert isa_cap({"DNNL_MAX_CPU_ISA": "AVX512_CORE_VNNI"}) == "AVX512_CORE_VNNI"  # the older name
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX512_CORE_VNNI"}) == "AVX2"  # newer wins
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX3"}) is None  # a name oneDNN does not know is ignored by it


def test_units_under_a_cap_are_those_onednn_may_still_use():
    from banet.machine import cap_allows, int8_units

    for cap, int8, bf16 in [(None, "amx_int8", ["amx_bf16", "avx512_bf16"]),
                            ("AVX512_CORE_AMX", "amx_int8", ["amx_bf16", "avx512_bf16"]),
                            ("AVX512_CORE_BF16", "avx512_vnni", ["avx512_bf16"]),
                            ("AVX512_CORE_VNNI", "avx512_vnni", []),
                            ("AVX2_VNNI", "avx_vnni", []),
                            ("AVX2", "none", []), ("SSE41", "none", [])]:
        environ = {"ONEDNN_MAX_CPU_ISA": cap} if cap else {}
        allowed = [unit for unit in ("amx_bf16", "avx512_bf16") if cap_allows(unit, cap)]
        assert (int8_units(AMX_CPU, environ), allowed) == (int8, bf16), cap
    # a cap never adds a unit the CPU lacks
    assert int8_units("flags\t\t: fpu avx2\n", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == "none"


def test_results_made_under_a_cap_are_named_for_it(monkeypatch):
    from banet.machine import cpu_name, results_stem

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    plain = cpu_name()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert cpu_name() == f"{plain} (oneDNN ISA cap AVX2)"
    assert results_stem("x", date="2026-12-06").endswith("-oneDNN-ISA-cap-AVX2_2026-12-06")


def test_the_unit_classes_below_this_cpus_are_those_it_can_run():
    from banet.machine import lesser_unit_classes

    assert lesser_unit_classes(AMX_CPU, {}) == {"avx512_vnni": "AVX512_CORE_VNNI", "avx_vnni": "AVX2_VNNI",
                                                "none": "AVX2"}
    assert lesser_unit_classes(AMX_CPU, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}) == {"avx_vnni": "AVX2_VNNI",
                                                                                        "none": "AVX2"}
    zen4 = "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n"  # no AVX-VNNI (VEX): that class is skipped
    assert lesser_unit_classes(zen4, {}) == {"none": "AVX2"}
    assert lesser_unit_classes("flags\t\t: fpu avx2\n", {}) == {}
    assert lesser_unit_classes("flags\t\t: fpu sse4_1\n", {}) == {}  # no AVX2: nothing below to run
