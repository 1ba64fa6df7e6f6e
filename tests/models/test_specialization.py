import pytest

from clsvit_lightning.models import COMPONENTS, PRESETS, Specialization


def test_paper_preset_is_norms_and_layerscales_everywhere_qkv_first_third_and_final_norm():
    blocks = Specialization.parse("paper").blocks(12)
    for component in ("norm1", "norm2", "ls1", "ls2"):
        assert blocks[component] == frozenset(range(12))
    assert blocks["qkv"] == frozenset(range(4))
    assert blocks["proj"] == blocks["mlp"] == frozenset()
    assert Specialization.parse("paper").final_norm
    assert Specialization.parse("paper").blocks(40)["qkv"] == frozenset(range(13))


def test_vanilla_preset_splits_nothing():
    spec = Specialization.parse("vanilla")
    assert spec.is_vanilla()
    assert all(not chosen for chosen in spec.blocks(12).values())
    assert Specialization.parse(None) == spec


@pytest.mark.parametrize(
    ("selector", "depth", "expected"),
    [
        ("none", 12, set()),
        ("all", 5, {0, 1, 2, 3, 4}),
        ("first_quarter", 12, {0, 1, 2}),
        ("first_third", 12, {0, 1, 2, 3}),
        ("first_third", 24, set(range(8))),
        ("first_half", 12, set(range(6))),
        ("last_half", 12, set(range(6, 12))),
        ("last_half", 5, {2, 3, 4}),
        ("0-3", 12, {0, 1, 2, 3}),
        ("0-3,8", 12, {0, 1, 2, 3, 8}),
        ("7", 12, {7}),
        (5, 12, {5}),
        ([0, 2, 4], 12, {0, 2, 4}),
        ([], 12, set()),
    ],
)
def test_selectors_resolve_against_depth(selector, depth, expected):
    assert Specialization(qkv=selector).blocks(depth)["qkv"] == frozenset(expected)


def test_spec_string_form():
    spec = Specialization.parse("norm1,norm2:all; qkv:0-3 ;final_norm")
    assert spec == Specialization(norm1="all", norm2="all", qkv="0-3", final_norm=True)
    assert Specialization.parse("mlp:1,3;registers_path:patch").blocks(4)["mlp"] == {1, 3}
    assert Specialization.parse("mlp:1,3;registers_path:patch").registers_path == "patch"


def test_a_preset_can_start_a_spec_string():
    spec = Specialization.parse("paper;mlp:0;registers_path:patch")
    assert spec.blocks(12)["qkv"] == frozenset(range(4)) and spec.blocks(12)["mlp"] == {0}
    assert spec.final_norm and spec.registers_path == "patch"


def test_structured_form_from_a_mapping():
    spec = Specialization.parse({"norm1": "all", "qkv": [0, 1], "final_norm": True})
    assert spec.blocks(4)["qkv"] == {0, 1}
    assert spec.final_norm


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_to_string_round_trips(name):
    spec = PRESETS[name]
    for depth in (4, 12, 40):
        again = Specialization.parse(spec.to_string(depth=depth))
        assert again.blocks(depth) == spec.blocks(depth)
        assert again.final_norm == spec.final_norm
    assert Specialization.parse(spec.to_string()).blocks(12) == spec.blocks(12)


def test_to_string_groups_components_with_the_same_blocks():
    assert PRESETS["paper"].to_string(depth=12) == "norm1,ls1,norm2,ls2:0-11;qkv:0-3;final_norm"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nrom1:all", "unknown specialization component 'nrom1'"),
        ("qkv:first_tenth", "cannot read selector"),
        ("qkv", "must read 'component"),
        ("qkv:4-2", "runs backwards"),
        ({"qkv": "all", "attn": "all"}, "unknown specialization field"),
        ("registers_path:both", "registers_path must be 'cls' or 'patch'"),
        (3.5, "must be a preset name"),
    ],
)
def test_bad_specs_name_the_problem(value, message):
    with pytest.raises(ValueError, match=message):
        Specialization.parse(value)


def test_out_of_range_block_names_component_index_and_range():
    with pytest.raises(ValueError, match=r"'qkv'.*block index 12 is out of range.*0\.\.11"):
        Specialization.parse("qkv:10-12").blocks(12)
    with pytest.raises(ValueError, match=r"'mlp'.*index -1"):
        Specialization(mlp=[-1])


def test_for_block_lists_the_components_split_in_that_block():
    spec = Specialization.parse("paper")
    assert spec.for_block(0, 12) == {"norm1", "norm2", "ls1", "ls2", "qkv"}
    assert spec.for_block(11, 12) == {"norm1", "norm2", "ls1", "ls2"}
    assert set(COMPONENTS) == {"norm1", "qkv", "proj", "ls1", "norm2", "mlp", "ls2"}


@pytest.mark.parametrize("value", ["final_norm:maybe", "final_norm:all", "paper;final_norm:0-3"])
def test_final_norm_with_a_selector_says_it_takes_true_or_false(value):
    with pytest.raises(ValueError, match="'final_norm' takes true or false") as error:
        Specialization.parse(value)
    assert "unknown" not in str(error.value)


def test_final_norm_true_and_false_are_read():
    assert Specialization.parse("norm1:all;final_norm:true").final_norm
    assert not Specialization.parse("paper;final_norm:false").final_norm


@pytest.mark.parametrize(
    ("value", "component"),
    [("norm1:all;norm1:0-3", "norm1"), ("norm1,norm1:all", "norm1"), ("final_norm;final_norm:false", "final_norm")]
    + [("qkv:0;registers_path:patch;registers_path:cls", "registers_path"), ("qkv,mlp:all;mlp:1", "mlp")],
)
def test_a_component_named_twice_is_an_error(value, component):
    with pytest.raises(ValueError, match=f"names '{component}' twice"):
        Specialization.parse(value)


def test_a_preset_is_a_starting_point_that_a_clause_may_override():
    assert Specialization.parse("paper;qkv:all").qkv == "all"  # not "named twice"


def test_the_norms_preset_is_paper_without_its_qkv_split_and_the_proxys_third_arm():
    from clsvit_lightning.study.proxy import NORMS_LS

    paper, norms = PRESETS["paper"].blocks(12), PRESETS["norms"].blocks(12)
    assert norms == {**paper, "qkv": set()}
    assert PRESETS["norms"].final_norm
    assert Specialization.parse(NORMS_LS) == PRESETS["norms"]
    assert Specialization.parse("norms").to_string(depth=12) == "norm1,ls1,norm2,ls2:0-11;final_norm"
