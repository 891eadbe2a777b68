"""The doc fragments say what the code does: the gates' defaults are the release model's."""
import yaml

from ansible_collections.greenflow.platform.plugins.doc_fragments import gates, nginx
from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model


def _options(fragment):
    return yaml.safe_load(fragment.ModuleDocFragment.DOCUMENTATION)["options"]


def test_the_gates_fragment_documents_every_gate_with_the_models_type_and_default():
    documented = _options(gates)
    assert set(documented) == set(model.GATE_SPEC)
    for name, spec in model.GATE_SPEC.items():
        doc = documented[name]
        assert doc["type"] == spec["type"], name
        assert doc["default"] == spec["default"], name
        assert doc.get("elements") == spec.get("elements"), name


def test_the_nginx_fragment_matches_nginx_upstreams_argument_spec():
    # nginx_upstream's argument spec is local to main(); these are the options release_cutover passes on
    from ansible_collections.greenflow.platform.plugins.action.release_cutover import (
        ARGUMENT_SPEC, NGINX_PASS_THROUGH)
    documented = _options(nginx)
    assert set(documented) == set(NGINX_PASS_THROUGH)
    for name in NGINX_PASS_THROUGH:
        assert documented[name]["type"] == ARGUMENT_SPEC[name]["type"], name
