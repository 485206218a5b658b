"""How ansible-runner events become the one line a person reads."""

from opsctl.runner import one_line, result_message, to_event


def test_failed_raw_command_reports_its_own_last_words_not_ssh_noise():
    res = {"rc": 3, "msg": "non-zero return code",
           "stdout": "checking\r\nphp-fpm config test failed, nothing was signalled: ERROR: bad\r\n",
           "stderr": "Shared connection to 10.213.3.22 closed.\r\n"}
    assert result_message(res) == "php-fpm config test failed, nothing was signalled: ERROR: bad"


def test_module_failure_reports_its_msg():
    assert result_message({"failed": True, "msg": "Status code was 502 and not [200]"}) == \
        "Status code was 502 and not [200]"


def test_failed_command_without_output_falls_back_to_msg():
    assert result_message({"rc": 1, "msg": "non-zero return code", "stdout": "", "stderr": ""}) == \
        "non-zero return code"


def test_long_messages_become_one_bounded_line():
    text = "line one\n" + "x" * 1000
    flat = one_line(text, limit=50)
    assert "\n" not in flat and len(flat) == 50 and flat.endswith("…")


def test_events_are_typed_and_unknown_ones_dropped():
    ok = to_event({"event": "runner_on_ok", "event_data": {"host": "web1", "task": "Step test: x",
                                                          "res": {"changed": True}}})
    assert (ok.kind, ok.host, ok.task, ok.changed) == ("ok", "web1", "Step test: x", True)
    start = to_event({"event": "playbook_on_task_start", "event_data": {"task": "Step drain: y"}})
    assert (start.kind, start.task, start.host) == ("task_start", "Step drain: y", "")
    assert to_event({"event": "verbose", "event_data": {}}) is None
