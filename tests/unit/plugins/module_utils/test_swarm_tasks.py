"""Swarm service convergence from the Docker API's dicts."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _swarm_tasks as st

NODES = [
    {"ID": "n1", "Description": {"Hostname": "worker-1"}, "Status": {"Addr": "10.0.0.1"}},
    {"ID": "n2", "Description": {"Hostname": "worker-2"}, "Status": {"Addr": "10.0.0.2"}},
]


def _service(replicas=2, ports=((8002, "host"),)):
    return {"Spec": {"Mode": {"Replicated": {"Replicas": replicas}},
                     "EndpointSpec": {"Ports": [{"PublishedPort": p, "PublishMode": m} for p, m in ports]}}}


def _task(node, state, image="demo:2", desired="running", slot=1, err="", ts="2026-01-01T00:00:00Z"):
    return {"ID": "t-%s-%s-%s" % (node, slot, state), "NodeID": node, "Slot": slot, "DesiredState": desired,
            "Status": {"State": state, "Err": err, "Timestamp": ts},
            "Spec": {"ContainerSpec": {"Image": image}}}


def test_all_replicas_running_the_image_is_converged_with_endpoints():
    tasks = [_task("n1", "running", slot=1), _task("n2", "running", slot=2)]
    state = st.assess(_service(), tasks, NODES, "demo:2")
    assert state["converged"] and state["running"] == 2
    assert state["endpoints"] == ["10.0.0.1:8002", "10.0.0.2:8002"]
    assert state["problems"] == []


def test_a_starting_task_is_not_healthy_yet():
    tasks = [_task("n1", "running", slot=1), _task("n2", "starting", slot=2)]
    state = st.assess(_service(), tasks, NODES, "demo:2")
    assert not state["converged"]
    assert state["endpoints"] == ["10.0.0.1:8002"]
    assert any("is starting" in p for p in state["problems"])


def test_old_image_still_running_is_not_converged():
    tasks = [_task("n1", "running", image="demo:1", slot=1), _task("n2", "running", slot=2)]
    state = st.assess(_service(), tasks, NODES, "demo:2")
    assert not state["converged"]
    assert any("runs demo:1, not demo:2" in p for p in state["problems"])


def test_shut_down_tasks_are_history_but_their_errors_are_reported():
    tasks = [
        _task("n1", "running", slot=1), _task("n2", "running", slot=2),
        _task("n2", "failed", desired="shutdown", slot=2, err="task: non-zero exit (1)", ts="2026-01-01T00:00:05Z"),
    ]
    state = st.assess(_service(), tasks, NODES, "demo:2")
    assert state["converged"]
    assert state["recent_failures"][0]["error"] == "task: non-zero exit (1)"
    assert state["recent_failures"][0]["node"] == "worker-2"


def test_too_few_replicas_is_named():
    state = st.assess(_service(replicas=3), [_task("n1", "running")], NODES, "demo:2")
    assert not state["converged"] and "1 of 3 replicas running and healthy" in state["problems"]


def test_scaled_to_zero_with_no_task_is_converged():
    state = st.assess(_service(replicas=0), [], NODES, None)
    assert state["converged"] and state["endpoints"] == []


def test_ingress_ports_are_not_endpoints():
    state = st.assess(_service(ports=((80, "ingress"),)), [_task("n1", "running")], NODES, None)
    assert state["endpoints"] == []


@pytest.mark.parametrize("task_image, wanted, matches", [
    ("demo:2", "demo:2", True),
    ("demo:2@sha256:abc", "demo:2", True),
    ("demo", "demo:latest", True),
    ("registry:5000/demo:2", "registry:5000/demo:2", True),
    ("registry:5000/demo", "registry:5000/demo:latest", True),
    ("demo:1", "demo:2", False),
    ("demo:2", None, True),
])
def test_image_matching(task_image, wanted, matches):
    assert st.image_matches(task_image, wanted) is matches


def test_spec_image_and_labels_are_returned():
    service = _service()
    service["Spec"]["Labels"] = {"greenflow.version": "2", "greenflow.fingerprint": "abc"}
    service["Spec"]["TaskTemplate"] = {"ContainerSpec": {"Image": "demo:2"}}
    state = st.assess(service, [], NODES, "demo:2")
    assert state["image"] == "demo:2"
    assert state["labels"] == {"greenflow.version": "2", "greenflow.fingerprint": "abc"}
    assert st.assess(_service(), [], NODES)["labels"] == {}


def _spec_service(env, replicas=2, update_state=None):
    service = _service(replicas)
    service["Spec"]["TaskTemplate"] = {"ContainerSpec": {"Image": "demo:2", "Env": env}}
    if update_state:
        service["UpdateStatus"] = {"State": update_state, "Message": "update in progress"}
    return service


def _spec_task(node, env, slot, state="running"):
    task = _task(node, state, slot=slot)
    task["Spec"]["ContainerSpec"]["Env"] = env
    return task


def test_tasks_of_an_older_spec_with_the_same_image_are_not_converged():
    # an env-only release keeps the image: the old tasks must not pass for the new ones
    service = _spec_service(["DEMO_ERROR_RATE=0.3"])
    tasks = [_spec_task("n1", [], 1), _spec_task("n2", [], 2)]
    state = st.assess(service, tasks, NODES, "demo:2")
    assert not state["converged"] and state["running"] == 0 and state["endpoints"] == []
    assert any("older spec" in p for p in state["problems"])


def test_tasks_of_the_current_spec_are_converged():
    service = _spec_service(["A=1"])
    tasks = [_spec_task("n1", ["A=1"], 1), _spec_task("n2", ["A=1"], 2)]
    state = st.assess(service, tasks, NODES, "demo:2")
    assert state["converged"] and state["running"] == 2


def test_an_update_in_progress_is_not_converged():
    service = _spec_service(["A=1"], update_state="updating")
    tasks = [_spec_task("n1", ["A=1"], 1), _spec_task("n2", ["A=1"], 2)]
    state = st.assess(service, tasks, NODES, "demo:2")
    assert not state["converged"]
    assert any("rolling an update out" in p for p in state["problems"])


def test_an_update_rolled_back_by_swarm_is_named():
    service = _spec_service(["A=1"], update_state="rollback_completed")
    tasks = [_spec_task("n1", ["A=1"], 1), _spec_task("n2", ["A=1"], 2)]
    state = st.assess(service, tasks, NODES, "demo:2")
    assert not state["converged"]
    assert any("rolled the last update back" in p for p in state["problems"])


def test_a_forced_update_makes_older_tasks_outdated():
    service = _spec_service(["A=1"])
    service["Spec"]["TaskTemplate"]["ForceUpdate"] = 2
    tasks = [_spec_task("n1", ["A=1"], 1), _spec_task("n2", ["A=1"], 2)]
    assert not st.task_matches_spec(tasks[0], service)
    assert not st.assess(service, tasks, NODES, "demo:2")["converged"]


def test_failed_tasks_of_the_current_spec_are_counted_since_a_time():
    service = _spec_service(["DEMO_HEALTHY=false"])
    old = _spec_task("n1", ["DEMO_HEALTHY=false"], 1, state="failed")
    old["Status"]["Timestamp"] = "2026-01-01T00:00:00.123456789Z"
    new = _spec_task("n2", ["DEMO_HEALTHY=false"], 2, state="failed")
    new["Status"]["Timestamp"] = "2026-01-01T00:10:00.5Z"
    other_spec = _spec_task("n1", [], 3, state="failed")
    other_spec["Status"]["Timestamp"] = "2026-01-01T00:10:00Z"
    tasks = [old, new, other_spec]
    assert st.failed_current(tasks, service) == 2
    since = st.timestamp_epoch("2026-01-01T00:05:00Z")
    assert st.failed_current(tasks, service, since) == 1
    assert st.assess(service, tasks, NODES, "demo:2", since)["failed_current"] == 1
    assert st.timestamp_epoch("garbage") is None


def test_a_task_that_exited_0_after_an_unhealthy_kill_counts_as_ended():
    service = _spec_service(["DEMO_HEALTHY=false"])
    tasks = [_spec_task("n1", ["DEMO_HEALTHY=false"], 1, state="complete"),
             _spec_task("n2", ["DEMO_HEALTHY=false"], 2, state="starting")]
    assert st.failed_current(tasks, service) == 1
