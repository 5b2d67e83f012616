"""Profiles: objects, names, the registry, the profiles file and resolution. Pure unit tests (local files only)."""

from __future__ import annotations

from pathlib import Path

import pytest

import pos3
from pos3 import profiles
from pos3.profiles import Profile, load_from_file, profiles_file, register_profile, resolve
from pos3.resolve import Resolver

SECRET = "S3CR3T-canary-value"


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh code registry per test, and a profiles file path of this test's own (absent until written)."""
    monkeypatch.setattr(profiles, "_registered", {})
    path = tmp_path / "conf" / "profiles.toml"
    monkeypatch.setenv("POS3_PROFILES_FILE", str(path))
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- Profile objects -------------------------------------------------------------


def test_0_4_0_credential_names_map_onto_the_s3_options():
    p = Profile(local_name="p", access_key="AK", secret_key=SECRET, session_token="TOK")
    assert dict(p.options) == {"access_key_id": "AK", "secret_access_key": SECRET, "session_token": "TOK"}
    assert p == Profile(
        local_name="p", options={"access_key_id": "AK", "secret_access_key": SECRET, "session_token": "TOK"}
    )
    r = register_profile("r", access_key="AK", secret_key=SECRET)
    assert dict(r.options) == {"access_key_id": "AK", "secret_access_key": SECRET}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"access_key": "AK"}, "an access key without a secret key"),
        ({"secret_key": SECRET}, "a secret key without an access key"),
        ({"session_token": "TOK"}, "a session token without"),
        ({"options": {"access_key_id": "AK"}}, "an access key without a secret key"),
        ({"access_key": "", "secret_key": SECRET}, "access_key_id is empty"),
        ({"access_key": "AK", "options": {"access_key_id": "OTHER", "secret_access_key": SECRET}}, "given twice"),
    ],
)
def test_partial_or_conflicting_credentials_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        Profile(local_name="p", **kwargs)
    assert SECRET not in str(info.value)
    opts = dict(kwargs.pop("options", {}))
    with pytest.raises(ValueError, match=message):
        register_profile("p", **kwargs, **opts)


def test_repr_hides_secrets():
    p = Profile(local_name="p", options={"secret_access_key": SECRET, "access_key_id": "AKIAXXX"})
    assert SECRET not in repr(p) and "AKIAXXX" not in repr(p) and "secret_access_key" in repr(p)
    assert SECRET not in str(p)


@pytest.mark.parametrize("bad", ["../x", "x.gs", "a b", "", "x/y", "é", "a\0"])
def test_local_name_is_one_plain_directory_name(bad):
    with pytest.raises(ValueError, match=r"\[A-Za-z0-9_-\]\+"):
        Profile(local_name=bad)


def test_local_names_never_collide_across_schemes(tmp_path):
    """A dot is not allowed in local_name, so '<local_name>.<scheme>' is unambiguous."""
    r = Resolver(tmp_path, 2)
    x = Profile(local_name="x", public=True)
    paths = {r.cache_path(pos3_url(u), x) for u in ("s3://b/k", "gs://b/k", "mem://b/k", "file://b/k")}
    assert paths == {tmp_path / "x/b/k", tmp_path / "x.gs/b/k", tmp_path / "x.mem/b/k", tmp_path / "x.file/b/k"}
    with pytest.raises(ValueError):
        Profile(local_name="x.gs")


def pos3_url(url: str):
    from pos3.urls import parse

    return parse(url)


# -- the registry ------------------------------------------------------------------


def test_registering_the_same_configuration_again_is_fine():
    a = register_profile("same", endpoint="http://e:1", public=True)
    assert register_profile("same", endpoint="http://e:1", public=True) is a
    assert resolve("same") is a


def test_registering_a_name_again_differently_names_the_differences_not_the_secrets():
    register_profile("dup", endpoint="http://e:1", access_key="AK", secret_key=SECRET)
    with pytest.raises(ValueError, match="already registered") as info:
        register_profile("dup", endpoint="http://e:2", region="eu", access_key="AK", secret_key=SECRET + "x")
    msg = str(info.value)
    assert "endpoint 'http://e:1' != 'http://e:2'" in msg and "region None != 'eu'" in msg
    assert "option secret_access_key differs" in msg and "access_key_id" not in msg
    assert SECRET not in msg
    assert resolve("dup").endpoint == "http://e:1"  # the first registration stands


def test_two_names_cannot_share_a_local_name_with_different_configurations():
    register_profile("a", endpoint="http://e:1", local_name="shared")
    register_profile("alias", endpoint="http://e:1", local_name="shared")  # the same configuration: same data
    with pytest.raises(ValueError, match="local_name 'shared' is already used by profile 'a'"):
        register_profile("b", endpoint="http://e:2", local_name="shared")


def test_underscore_is_reserved_for_the_default_profile():
    with pytest.raises(ValueError, match="reserved for the default profile"):
        register_profile("mine", local_name="_", endpoint="http://e:1")
    with pytest.raises(ValueError, match="reserved for the default profile"):
        register_profile("_", region="eu-west-1")


def test_a_name_that_is_not_a_local_name_needs_one():
    with pytest.raises(ValueError, match="pass local_name="):
        register_profile("team.data", public=True)
    assert register_profile("team.data", public=True, local_name="team-data").local_name == "team-data"
    assert resolve("team.data").local_name == "team-data"


def test_unknown_names_are_errors_naming_where_pos3_looked(registry):
    register_profile("known", public=True)
    with pytest.raises(
        ValueError, match=rf"Unknown profile 'nope' \(registered in code: known; no profiles file at {registry}"
    ):
        resolve("nope")
    write(registry, "[profiles.other]\npublic = true\n")
    with pytest.raises(ValueError, match=f"no profile of that name in {registry}"):
        resolve("nope")
    assert resolve(None) is profiles.DEFAULT
    assert resolve(None, "known").public


# -- the profiles file ---------------------------------------------------------------


def test_where_the_profiles_file_is(monkeypatch, tmp_path):
    monkeypatch.setenv("POS3_PROFILES_FILE", "~/p.toml")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert profiles_file() == tmp_path / "home/p.toml"
    monkeypatch.delenv("POS3_PROFILES_FILE")
    assert profiles_file() == tmp_path / "xdg/pos3/profiles.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # the XDG spec says: ignore a relative path
    assert profiles_file() == tmp_path / "home/.config/pos3/profiles.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert profiles_file() == tmp_path / "home/.config/pos3/profiles.toml"


def test_a_full_entry(registry):
    write(
        registry,
        """
[profiles.acme]
endpoint = "https://s3.example.com"
region = "us-east-1"
local_name = "acme-cache"
credentials_file = "acme.creds"
addressing_style = "path"

[profiles.acme.options]
part_size = 16777216

[profiles.open]
public = true
""",
    )
    write(
        registry.parent / "acme.creds",
        f"[other]\naws_access_key_id = X\n\n[acme]\naws_access_key_id = AK\naws_secret_access_key = {SECRET}\n",
    )
    p = resolve("acme")
    assert (p.local_name, p.endpoint, p.region, p.public) == (
        "acme-cache",
        "https://s3.example.com",
        "us-east-1",
        False,
    )
    assert dict(p.options) == {
        "addressing_style": "path",
        "part_size": 16777216,
        "access_key_id": "AK",
        "secret_access_key": SECRET,
    }
    assert resolve("open") == Profile(local_name="open", public=True)


def test_credentials_file_paths_expand_home_and_resolve_next_to_the_profiles_file(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write(
        tmp_path / "home/keys/h.ini", "[h]\naws_access_key_id = H\naws_secret_access_key = HS\naws_session_token = T\n"
    )
    write(registry.parent / "sub/r.ini", "[r]\naws_access_key_id = R\naws_secret_access_key = RS\n")
    write(registry, '[profiles.h]\ncredentials_file = "~/keys/h.ini"\n[profiles.r]\ncredentials_file = "sub/r.ini"\n')
    assert dict(resolve("h").options) == {"access_key_id": "H", "secret_access_key": "HS", "session_token": "T"}
    assert dict(resolve("r").options) == {"access_key_id": "R", "secret_access_key": "RS"}


@pytest.mark.parametrize(
    ("creds", "message"),
    [
        (None, r"credentials_file .*acme\.creds does not exist"),
        (
            "[acmee]\naws_access_key_id = AK\naws_secret_access_key = {s}\n",
            r"has no \[acme\] section \(sections: \[acmee\]\)",
        ),
        ("[acme]\naws_access_key_id = AK\n", "needs both aws_access_key_id and aws_secret_access_key"),
        ("[acme]\naws_secret_access_key = {s}\naws_session_token = T\n", "needs both"),
        ("[acme]\naws_access_key_id = AK\naws_secret_key = {s}\n", r"unknown keys \['aws_secret_key'\]"),
        ("[acme]\naws_access_key_id = AK\naws_secret_access_key =\n", "secret_access_key is empty"),
        ("not an ini file = {s}\n", "cannot be read: MissingSectionHeaderError"),
    ],
)
def test_a_broken_credentials_file_is_an_error_naming_it(registry, creds, message):
    write(registry, '[profiles.acme]\nendpoint = "http://e:1"\ncredentials_file = "acme.creds"\n')
    if creds is not None:
        write(registry.parent / "acme.creds", creds.format(s=SECRET))
    with pytest.raises(ValueError, match=message) as info:
        resolve("acme")
    msg = str(info.value)
    assert str(registry) in msg and SECRET not in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[profiles.acme\n", "cannot be read"),
        ("[profile.acme]\npublic = true\n", r"expected only \[profiles.NAME\] tables, found \['profile'\]"),
        ("[profiles.acme]\npublic = 'yes'\n", "public must be a bool"),
        ("[profiles.acme]\nendpoint = 3\n", "endpoint must be a str"),
        ("[profiles.acme]\nlocal_name = 'a.b'\n", r"local_name must match"),
        ("[profiles.acme]\nlocal_name = '_'\nendpoint = 'http://e:1'\n", "reserved for the default profile"),
        ("[profiles.acme]\naccess_key = 'AK'\n", "partial credentials"),
        (
            "[profiles.acme]\naccess_key_id = 'AK'\nsecret_access_key = 'S'\ncredentials_file = 'c'\n",
            "both inline",
        ),
    ],
)
def test_a_broken_entry_is_an_error_naming_the_file(registry, toml, message):
    write(registry, toml)
    with pytest.raises(ValueError, match=message) as info:
        resolve("acme")
    assert str(registry) in str(info.value)


def test_a_file_entry_named_unlike_a_directory_needs_a_local_name(registry):
    write(registry, '[profiles."team.data"]\npublic = true\n[profiles."team.ok"]\npublic = true\nlocal_name = "ok"\n')
    with pytest.raises(ValueError, match=r"profile 'team.data': the name .* add local_name = \"\.\.\.\"") as info:
        resolve("team.data")
    assert str(registry) in str(info.value)
    assert resolve("team.ok").local_name == "ok"


def test_code_registrations_win_over_the_file(registry):
    write(registry, '[profiles.both]\nendpoint = "http://from-file:1"\npublic = true\n')
    assert resolve("both").endpoint == "http://from-file:1"
    register_profile("both", endpoint="http://from-code:1", public=True)
    assert resolve("both").endpoint == "http://from-code:1"


def test_the_file_is_read_at_each_lookup_and_only_the_entry_used_is_checked(registry):
    write(registry, "[profiles.a]\nendpoint = 'http://one:1'\npublic = true\n[profiles.broken]\npublic = 'no'\n")
    assert resolve("a").endpoint == "http://one:1"
    write(registry, "[profiles.a]\nendpoint = 'http://two:1'\npublic = true\n")
    assert resolve("a").endpoint == "http://two:1"
    assert load_from_file("missing", registry) is None
    assert load_from_file("a", registry.parent / "absent.toml") is None


# -- resolution in a mirror ---------------------------------------------------------------


def test_the_url_profile_wins_and_is_looked_up_once_per_mirror(registry, tmp_path):
    write(registry, "[profiles.f]\nendpoint = 'http://one:1'\npublic = true\n")
    register_profile("c", public=True)
    r = Resolver(tmp_path, 2, default_profile="c")
    assert r.resolve("mem://b/k").profile.local_name == "c"  # the mirror's default
    assert r.resolve("mem://b/k", profile=Profile(local_name="arg")).profile.local_name == "arg"
    loc = r.resolve("mem://f@b/k", profile=Profile(local_name="arg"))  # the URL's profile wins
    assert (loc.profile.local_name, loc.url.profile, str(loc.url)) == ("f", "f", "mem://b/k")
    assert loc.local_path == tmp_path / "f.mem/b/k"
    write(registry, "[profiles.f]\nendpoint = 'http://two:1'\npublic = true\n")
    assert r.resolve("mem://f@b/k").profile.endpoint == "http://one:1"  # stable for the mirror's lifetime
    assert Resolver(tmp_path, 2).resolve("mem://f@b/k").profile.endpoint == "http://two:1"  # the next one re-reads
    with pytest.raises(ValueError, match="Unknown profile 'ghost'"):
        r.resolve("mem://ghost@b/k")


def test_two_profiles_never_share_a_cache_directory_in_one_mirror(tmp_path):
    r = Resolver(tmp_path, 2)
    r.resolve("mem://b/k", profile=Profile(local_name="x", endpoint="http://one:1"))
    r.resolve("mem://b/k", profile=Profile(local_name="x", endpoint="http://one:1"))  # equal: fine
    with pytest.raises(ValueError, match="local_name 'x' is already used in this mirror") as info:
        r.resolve("mem://b/k", profile=Profile(local_name="x", endpoint="http://two:1"))
    assert "endpoint 'http://one:1' != 'http://two:1'" in str(info.value)
    with pytest.raises(ValueError, match="reserved for the default profile"):
        r.resolve("mem://b/k", profile=Profile(endpoint="http://three:1"))
    with pytest.raises(ValueError, match="reserved for the default profile"):
        Resolver(tmp_path, 2, default_profile=Profile(region="eu-west-1"))


def test_the_api_refuses_unknown_and_conflicting_profiles_before_any_transfer(tmp_path):
    import pos3_memstore

    pos3_memstore.create_bucket("profiles-api")
    try:
        with pos3.mirror(cache_root=tmp_path / "cache", show_progress=False):
            with pytest.raises(ValueError, match="Unknown profile 'ghost'"):
                pos3.download("mem://ghost@profiles-api/k")
            with pytest.raises(ValueError, match="Unknown profile 'ghost'"):
                pos3.upload("mem://profiles-api/k", profile="ghost")
            out = pos3.upload("mem://profiles-api/out", profile=Profile(local_name="x", public=True), interval=None)
            (out / "f").write_text("f")
            with pytest.raises(ValueError, match="already used in this mirror"):
                pos3.upload("mem://profiles-api/out2", profile=Profile(local_name="x"), interval=None)
        assert pos3_memstore.keys("profiles-api") == ["out/f"]  # the refused registrations left no trace
        assert out == tmp_path / "cache/x.mem/profiles-api/out"
    finally:
        pos3_memstore.delete_bucket("profiles-api")
