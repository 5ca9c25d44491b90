"""``--check`` and the doctor share one answer to "would it start?" (:func:`device.preflight.start_report`)."""

from device.preflight import start_report


def test_a_sound_configuration_would_start_and_names_a_missing_key(tmp_path):
    sets = [f"outbox.path={tmp_path / 'outbox.db'}", f"upload.key_file={tmp_path / 'device.key'}",
            f"console.settings_path={tmp_path / 'settings.toml'}"]
    # Ed25519 (the default) without the hall's public key: it would start, and says what it lacks.
    report = start_report([], sets)
    assert report.would_start and [k for k, _ in report.warnings] == ["upload.hall_public_key"]
    # The shared key (v2) without its key file.
    sets.append('upload.signature="hmac-sha256"')
    report = start_report([], sets)
    assert report.would_start
    assert [k for k, _ in report.warnings] == ["upload.key_file"]
    assert "ratings are kept but not uploaded" in report.lines()[1]
    (tmp_path / "device.key").write_text("k3y-0123456789abcdef")
    report = start_report([], sets)
    assert report.would_start and report.warnings == [] and report.lines() == ["would start"]


def test_hostile_values_and_committed_settings_stop_a_start(tmp_path):
    report = start_report([], ["outbox.path=/dev/null", "session.thanks_s=inf"])
    assert not report.would_start
    assert {k for k, _ in report.blockers} == {"outbox.path", "session.thanks_s"}
    assert report.lines()[0].startswith("would NOT start")
    settings = tmp_path / "settings.toml"
    settings.write_text('[staff]\nname = "王\U00020000"\n', encoding="utf-8")
    report = start_report([], [f"console.settings_path={settings}", f"outbox.path={tmp_path / 'o.db'}"])
    assert [k for k, _ in report.blockers] == ["staff.name"]
