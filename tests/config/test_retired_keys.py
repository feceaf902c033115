"""Keys the visibility study (now projects/visibility) once had in the core: every stored config of an older release
holds them, at the paper's value for the core's models. Without the project such a config loads (they are dropped);
at another value it is refused, naming the project to install. Run in a fresh process, so no test imported it."""
import subprocess
import sys
import textwrap

_OLD_DUMP = textwrap.dedent("""
    import sys, yaml
    from lfem_plugin.config import get_default_config, load_config
    data = yaml.safe_load(get_default_config().dump())
    data["lfem"].update(gate_supervision=0.0, occluder="noise", gate_scope="refined", token_supervision=0.0,
                        gate_grad="all", gate_input="relation")
    cfg = load_config(None, ["lfem.gate_grad", "all"], text=yaml.safe_dump(data))
    assert "gate_supervision" not in cfg.lfem and "lfem_visibility" not in sys.modules
    data["lfem"]["gate_scope"] = "local"
    try:
        load_config(None, text=yaml.safe_dump(data))
    except KeyError as err:
        print(err.args[0])
""")


def test_an_older_stored_config_loads_without_the_project_and_a_study_setting_names_it():
    out = subprocess.run([sys.executable, "-c", _OLD_DUMP], capture_output=True, text=True, check=True).stdout
    assert "lfem.gate_scope 'local' (in the checkpoint's stored config) is a key of the research project " \
           "lfem_visibility" in out and "pip install -e projects/visibility" in out
