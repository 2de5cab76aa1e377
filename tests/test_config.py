import dataclasses

import pytest

from token_compressor.config import Config, ConfigError, from_env


def test_unset_means_off_with_defaults():
    cfg = from_env({})
    assert cfg == Config(compressor=None, ratio=0.25, kernels="auto")
    assert not cfg.enabled


def test_valid_values():
    cfg = from_env({"COMPRESSOR": " VidCom2 ", "R_RATIO": "0.5", "TOKEN_COMPRESSOR_KERNELS": "torch"})
    assert (cfg.compressor, cfg.ratio, cfg.kernels, cfg.enabled) == ("vidcom2", 0.5, "torch", True)
    assert not from_env({"COMPRESSOR": "none"}).enabled
    assert from_env({"R_RATIO": "1"}).ratio == 1.0


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        from_env({}).ratio = 0.5


@pytest.mark.parametrize(
    "env, message",
    [
        ({"R_RATIO": "abc"}, r"R_RATIO='abc' is not a number; expected a number in \(0, 1\]"),
        ({"R_RATIO": "0"}, r"R_RATIO='0' is out of range; expected a number in \(0, 1\]"),
        ({"R_RATIO": "1.01"}, r"R_RATIO='1.01' is out of range"),
        ({"R_RATIO": "nan"}, r"R_RATIO='nan' is out of range"),
        ({"R_RATIO": "-0.2"}, r"R_RATIO='-0.2' is out of range"),
        ({"COMPRESSOR": "vidcom3"}, r"COMPRESSOR='vidcom3' is not a known compressor; expected one of: .*vidcom2"),
        ({"TOKEN_COMPRESSOR_KERNELS": "cuda"}, r"TOKEN_COMPRESSOR_KERNELS='cuda' is not a kernel backend; expected one of: auto, triton, numba, torch"),
    ],
)
def test_errors_name_variable_value_and_accepted(env, message):
    with pytest.raises(ConfigError, match=message):
        from_env(env)


# -- the authors' hyperparameter variables of dycoke, fastvid, visionzip, holitom ---------------

from token_compressor.config import METHOD_OPTIONS, method_options_from_env  # noqa: E402

# every variable the VidCom² authors' Qwen code reads, with a valid value and the option it sets
AUTHORS_VARIABLES = {
    "dycoke": {"DYCOKE_K": ("0.7", "k", 0.7), "DYCOKE_NUM_TOKENS_PER_FRAME": ("256", "num_tokens_per_frame", 256)},
    "fastvid": {"fastvid_retention_ratio": ("0.3", "retention_ratio", 0.3), "fastvid_DySeg_c": ("6", "dyseg_c", 6),
                "fastvid_DySeg_tau": ("0.8", "dyseg_tau", 0.8), "fastvid_DySeg_ignore": ("0.95", "dyseg_ignore", 0.95),
                "fastvid_STPrune_d": ("0.4", "stprune_d", 0.4), "fastvid_DTM_p": ("3", "dtm_p", 3),
                "fastvid_DTM_beta": ("0.6", "dtm_beta", 0.6)},
    "visionzip": {"visionzip_dominant_ratio": ("0.5", "dominant_ratio", 0.5),
                  "visionzip_k_neighbors": ("7", "k_neighbors", 7)},
    "holitom": {"HOLITOM_T": ("0.75", "t", 0.75), "HOLITOM_BETA": ("0.5", "beta", 0.5), "HOLITOM_D": ("0.1", "d", 0.1),
                "HOLITOM_K": ("5", "k", 5), "HOLITOM_MAX_WINDOW_SIZE": ("64", "max_window_size", 64)},
}

# ours: the corrected behaviours of the authors' quirks, off by default
CORRECTION_VARIABLES = {
    "dycoke": {"TOKEN_COMPRESSOR_DYCOKE_KEEP_LAST_FRAME": ("on", "keep_last_frame", True)},
    "fastvid": {"TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET": ("1", "fill_budget", True)},
    "visionzip": {},
    "holitom": {"TOKEN_COMPRESSOR_HOLITOM_POSITIONS": ("Centres", "positions", "centres")},
}


def test_every_authors_variable_is_read_in_one_table():
    assert {m: {v for v, _, _ in rows} for m, rows in METHOD_OPTIONS.items()} == \
        {m: set(vs) | set(CORRECTION_VARIABLES[m]) for m, vs in AUTHORS_VARIABLES.items()}


@pytest.mark.parametrize("method", sorted(CORRECTION_VARIABLES))
def test_correction_variables_map_to_options(method):
    env = {var: text for var, (text, _, _) in CORRECTION_VARIABLES[method].items()}
    assert method_options_from_env(method, env) == {opt: v for _, opt, v in CORRECTION_VARIABLES[method].values()}
    off = {var: "off" for var in env if not var.endswith("POSITIONS")}
    assert all(v is False for v in method_options_from_env(method, off).values())


@pytest.mark.parametrize("env, message", [
    ({"TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET": "maybe"}, r"TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET='maybe' is not a switch"),
    ({"TOKEN_COMPRESSOR_HOLITOM_POSITIONS": "center"}, r"TOKEN_COMPRESSOR_HOLITOM_POSITIONS='center' is not accepted; "
                                                      r"expected one of: linspace, centres"),
])
def test_bad_correction_variables_name_the_variable(env, message):
    method = "fastvid" if "FASTVID" in next(iter(env)) else "holitom"
    with pytest.raises(ConfigError, match=message):
        from_env({"COMPRESSOR": method, **env})


@pytest.mark.parametrize("method", sorted(AUTHORS_VARIABLES))
def test_variables_map_to_the_methods_options(method):
    env = {var: text for var, (text, _, _) in AUTHORS_VARIABLES[method].items()}
    # (the corrections are checked separately below)
    assert method_options_from_env(method, env) == {opt: value for _, opt, value in AUTHORS_VARIABLES[method].values()}
    assert method_options_from_env(method, {}) == {}, "unset: the compressor's (the authors') defaults"
    assert method_options_from_env(method, {var: " " for var in env}) == {}


def test_only_the_selected_compressors_variables_apply():
    env = {"COMPRESSOR": "dycoke", "DYCOKE_K": "0.6", "visionzip_k_neighbors": "0", "HOLITOM_T": "abc"}
    assert from_env(env).options == (("k", 0.6),)
    assert from_env({**env, "COMPRESSOR": "visionzip", "visionzip_k_neighbors": "3"}).options == (("k_neighbors", 3),)
    assert from_env({"DYCOKE_K": "2"}).options == (), "no compressor selected: nothing read"


@pytest.mark.parametrize("method, env, message", [
    ("dycoke", {"DYCOKE_K": "2"}, r"DYCOKE_K='2' is out of range; expected a number in \[0, 1\]"),
    ("dycoke", {"DYCOKE_K": "abc"}, r"DYCOKE_K='abc' is not a number"),
    ("dycoke", {"DYCOKE_NUM_TOKENS_PER_FRAME": "0"}, r"DYCOKE_NUM_TOKENS_PER_FRAME='0' is out of range; expected an integer >= 1 or -1"),
    ("visionzip", {"visionzip_k_neighbors": "0"}, r"visionzip_k_neighbors='0' is out of range; expected an integer >= 1"),
    ("visionzip", {"visionzip_k_neighbors": "2.5"}, r"visionzip_k_neighbors='2.5' is not an integer"),
    ("visionzip", {"visionzip_dominant_ratio": "1.5"}, r"visionzip_dominant_ratio='1.5' is out of range"),
    ("fastvid", {"fastvid_retention_ratio": "0"}, r"fastvid_retention_ratio='0' is out of range; expected a number in \(0, 1\]"),
    ("fastvid", {"fastvid_DySeg_c": "eight"}, r"fastvid_DySeg_c='eight' is not an integer"),
    ("fastvid", {"fastvid_DySeg_tau": "nan"}, r"fastvid_DySeg_tau='nan' is out of range"),
    ("fastvid", {"fastvid_DTM_p": "0"}, r"fastvid_DTM_p='0' is out of range"),
    ("holitom", {"HOLITOM_T": "abc"}, r"HOLITOM_T='abc' is not a number; expected a number in \[-1, 1\]"),
    ("holitom", {"HOLITOM_K": "0"}, r"HOLITOM_K='0' is out of range; expected an integer >= 1"),
    ("holitom", {"HOLITOM_MAX_WINDOW_SIZE": "-3"}, r"HOLITOM_MAX_WINDOW_SIZE='-3' is out of range"),
])
def test_bad_method_variables_name_variable_value_and_accepted(method, env, message):
    with pytest.raises(ConfigError, match=message):
        method_options_from_env(method, env)


@pytest.mark.parametrize("env, message", [
    ({"COMPRESSOR": "dycoke", "DYCOKE_K": "2"}, "DYCOKE_K='2' is out of range"),
    ({"COMPRESSOR": "visionzip", "visionzip_k_neighbors": "0"}, "visionzip_k_neighbors='0' is out of range"),
])
def test_bad_method_variables_fail_the_whole_configuration(env, message):
    with pytest.raises(ConfigError, match=message):
        from_env(env)
