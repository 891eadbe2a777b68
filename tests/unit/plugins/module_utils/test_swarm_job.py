"""A one-off swarm job: its service spec, its outcome read from the task, its output cut to size."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _swarm_job as job


def test_a_job_runs_its_command_once_without_restart_or_healthcheck():
    template, mode = job.service_spec("app:2", ["python3", "app.py", "migrate"], {"B": "2", "A": None},
                                      [{"id": "s1", "name": "db_password"}], ["node.role == worker"],
                                      {"cpus": 0.5, "memory": "256M"}, ["app-net"])
    assert mode == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    container = template["ContainerSpec"]
    assert container["Image"] == "app:2"
    assert container["Args"] == ["python3", "app.py", "migrate"]  # the CMD, not the ENTRYPOINT
    assert "Command" not in container
    assert container["Env"] == ["A=", "B=2"]
    assert container["Healthcheck"] == {"Test": ["NONE"]}
    assert container["Secrets"] == [{"SecretID": "s1", "SecretName": "db_password",
                                     "File": {"Name": "db_password", "UID": "0", "GID": "0", "Mode": 0o444}}]
    assert template["RestartPolicy"]["Condition"] == "none"
    assert template["Placement"] == {"Constraints": ["node.role == worker"]}
    assert template["Networks"] == [{"Target": "app-net"}]
    assert template["Resources"] == {"Limits": {"NanoCPUs": 500000000, "MemoryBytes": 256 * 1024 ** 2}}


def test_a_bare_job_has_no_placement_networks_secrets_or_limits():
    template, _mode = job.service_spec("app:2", ["true"])
    assert "Placement" not in template and "Networks" not in template
    assert "Secrets" not in template["ContainerSpec"]
    assert template["Resources"] == {}


@pytest.mark.parametrize("image, command", [("", ["true"]), ("app", []), ("app", "migrate"), ("app", ["a", ""])])
def test_a_job_without_image_or_with_a_bad_command_is_refused(image, command):
    with pytest.raises(job.SwarmJobError):
        job.service_spec(image, command)


@pytest.mark.parametrize("text, size", [("256M", 256 * 1024 ** 2), ("1g", 1024 ** 3), ("512MiB", 512 * 1024 ** 2),
                                        ("1048576", 1048576), ("1.5G", int(1.5 * 1024 ** 3)), (4096, 4096)])
def test_memory_sizes_read_like_docker(text, size):
    assert job.memory_bytes(text) == size


@pytest.mark.parametrize("text", ["lots", "12X", "0", "-1M", 0, ""])
def test_a_bad_memory_size_is_refused(text):
    with pytest.raises(job.SwarmJobError):
        job.memory_bytes(text)


@pytest.mark.parametrize("limits", [{"cpus": 0}, {"cpus": "many"}, {"gpus": 1}])
def test_bad_limits_are_refused(limits):
    with pytest.raises(job.SwarmJobError):
        job.resources(limits)


def _task(state, exit_code=None, err="", created="2026-12-02T10:00:00Z", node="n1", container="c1"):
    status = {"State": state, "Err": err}
    if exit_code is not None:
        status["ContainerStatus"] = {"ExitCode": exit_code, "ContainerID": container}
    return {"ID": created, "CreatedAt": created, "NodeID": node, "Status": status}


def test_no_task_yet_is_not_done():
    assert job.outcome([]) == {"done": False, "ok": False, "state": "no task yet", "exit_code": None,
                               "started": False, "error": "", "node": ""}


@pytest.mark.parametrize("state", ["pending", "assigned", "preparing", "starting", "running"])
def test_a_task_on_its_way_is_not_done(state):
    out = job.outcome([_task(state, exit_code=0)])
    assert (out["done"], out["ok"], out["exit_code"]) == (False, False, None)


def test_a_complete_task_with_exit_code_0_is_ok():
    out = job.outcome([_task("complete", exit_code=0)])
    assert (out["done"], out["ok"], out["exit_code"], out["node"]) == (True, True, 0, "n1")
    # swarm may leave the exit code out of a complete task: complete means 0
    assert job.outcome([_task("complete")])["exit_code"] == 0


def test_a_failed_task_says_its_exit_code_and_swarms_word():
    out = job.outcome([_task("failed", exit_code=1, err="task: non-zero exit (1)")])
    assert (out["done"], out["ok"], out["exit_code"], out["error"]) == (True, False, 1, "task: non-zero exit (1)")


@pytest.mark.parametrize("state", ["rejected", "shutdown", "orphaned"])
def test_a_task_swarm_ended_is_done_and_not_ok(state):
    out = job.outcome([_task(state, err="no suitable node")])
    assert (out["done"], out["ok"], out["state"], out["started"]) == (True, False, state, False)


def test_a_rejected_task_never_started_and_has_no_exit_code():
    # swarm reports exit code 0 for a task it rejected (no such image): it ran nothing
    out = job.outcome([_task("rejected", exit_code=0, err="No such image: app:3", container="")])
    assert (out["done"], out["ok"], out["started"], out["exit_code"]) == (True, False, False, None)
    ran = job.outcome([_task("failed", exit_code=1, err="task: non-zero exit (1)")])
    assert ran["started"] is True


def test_the_newest_task_tells():
    tasks = [_task("complete", 0, created="2026-12-02T10:00:05Z"), _task("rejected", created="2026-12-02T10:00:00Z")]
    assert job.outcome(tasks)["state"] == "complete"


def test_the_output_keeps_its_end():
    text = "\n".join("line %d" % i for i in range(1, 301))
    out, total = job.tail(text, max_lines=3)
    assert (out, total) == ("line 298\nline 299\nline 300", 300)
    out, total = job.tail(text, max_lines=300, max_chars=8)
    assert out == "line 300" and total == 300
    assert job.tail("", 10) == ("", 0)
    assert job.tail("a\nb", 0) == ("", 2)
