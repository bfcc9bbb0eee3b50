#!/usr/bin/env python3
"""mrprov's config converge, run at every container start before the app.

Shipped by mrprov in the app's build context (lua/resources/lib/seed.lua) and
made the image's CMD:

    converge_config.py --template T --config C [-- COMMAND ...]

T is the config mrprov renders for the instance's tier (read-only in the
image); C the persistent config file on the app's storage, which the
customer edits too (MindRoom's dashboard saves it). Standard library and
PyYAML only (MindRoom depends on pyyaml>=6: pyproject.toml).

- C missing: T is copied to C (mode 0600), as MindRoom itself would seed it
  from MINDROOM_CONFIG_TEMPLATE (src/mindroom/constants.py
  ensure_writable_config_path).
- C present: merged. mrprov owns what it wrote, recorded in a side file
  next to C (OWNED_FILE):
  * in the sections of named entries (ENTRY_SECTIONS: agents, models, ...)
    the entries T holds: they are set to T's value; an entry mrprov wrote
    last time that T no longer holds is removed; any other entry (one the
    customer added) is kept;
  * every other top-level key T holds (router, memory, defaults, ...) as a
    whole value: set to T's; one mrprov wrote last time that T no longer
    holds is removed;
  * everything else in C (sections T never writes) is kept as it is.
  C is rewritten only when something changed: atomically (temporary file in
  its directory, fsync, rename), mode 0600.
- Then COMMAND is exec'd (none: exit 0). A C that is not a YAML mapping is
  left alone (the app reports it); so is a broken side file (treated as
  "mrprov owned nothing").
"""
import json
import os
import sys
import tempfile

import yaml

OWNED_FILE = ".mrprov-owned.json"

# Top-level sections of MindRoom's config that are mappings of named
# entries (src/mindroom/config/main.py Config: dict[str, ...] fields).
ENTRY_SECTIONS = frozenset({
    "agents", "models", "teams", "rooms", "cultures", "knowledge_bases", "mcp_servers",
    "room_models", "room_thread_summary_models",
})


def log(msg):
    print("mrprov-converge: " + msg, file=sys.stderr, flush=True)


def parse_args(argv):
    template = config = None
    command = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            command = argv[i + 1:]
            break
        if a in ("--template", "--config") and i + 1 < len(argv):
            if a == "--template":
                template = argv[i + 1]
            else:
                config = argv[i + 1]
            i += 2
            continue
        raise SystemExit("mrprov-converge: usage: --template T --config C [-- COMMAND ...] (got %r)" % a)
    if not template or not config:
        raise SystemExit("mrprov-converge: --template and --config are required")
    return template, config, command


def write_atomic(path, data):
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".mrprov-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o600)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def owned_of(template):
    """What mrprov writes from this template: {"entries": {section: [names]}, "whole": [keys]}."""
    entries, whole = {}, []
    for key, value in template.items():
        if key in ENTRY_SECTIONS and isinstance(value, dict):
            entries[key] = sorted(str(n) for n in value)
        else:
            whole.append(key)
    return {"entries": entries, "whole": sorted(whole)}


def read_owned(path):
    try:
        with open(path, encoding="utf-8") as f:
            owned = json.load(f)
    except FileNotFoundError:
        return {"entries": {}, "whole": []}
    except (OSError, ValueError) as e:
        log("ignoring unreadable %s: %s" % (path, e))
        return {"entries": {}, "whole": []}
    if not isinstance(owned, dict):
        return {"entries": {}, "whole": []}
    entries = owned.get("entries") if isinstance(owned.get("entries"), dict) else {}
    whole = owned.get("whole") if isinstance(owned.get("whole"), list) else []
    return {"entries": {k: v for k, v in entries.items() if isinstance(v, list)}, "whole": whole}


def merge(current, template, before):
    """current (the customer's config) converged to template, given what mrprov owned before."""
    out = dict(current)
    # removals first: what mrprov wrote last time and writes no more
    for section, names in before["entries"].items():
        tsec = template.get(section)
        keep = set(tsec) if section in ENTRY_SECTIONS and isinstance(tsec, dict) else set()
        csec = out.get(section)
        if isinstance(csec, dict):
            csec = dict(csec)
            for n in names:
                if n not in keep:
                    csec.pop(n, None)
            out[section] = csec
    for key in before["whole"]:
        if key not in template:
            out.pop(key, None)
    # then what mrprov writes now
    for key, value in template.items():
        if key in ENTRY_SECTIONS and isinstance(value, dict):
            csec = out.get(key)
            csec = dict(csec) if isinstance(csec, dict) else {}
            for n, v in value.items():
                csec[n] = v
            out[key] = csec
        else:
            out[key] = value
    return out


def converge(template_path, config_path):
    with open(template_path, "rb") as f:
        template_bytes = f.read()
    template = yaml.safe_load(template_bytes)
    if not isinstance(template, dict):
        raise SystemExit("mrprov-converge: %s is not a YAML mapping" % template_path)
    owned_path = os.path.join(os.path.dirname(config_path) or ".", OWNED_FILE)
    os.makedirs(os.path.dirname(config_path) or ".", exist_ok=True)
    owned_now = owned_of(template)
    if not os.path.exists(config_path):
        write_atomic(config_path, template_bytes)
        log("seeded %s from %s" % (config_path, template_path))
    else:
        with open(config_path, "rb") as f:
            try:
                current = yaml.safe_load(f.read())
            except yaml.YAMLError as e:
                log("%s is not valid YAML, left as it is: %s" % (config_path, e))
                return
        if current is None:
            current = {}
        if not isinstance(current, dict):
            log("%s is not a YAML mapping, left as it is" % config_path)
            return
        merged = merge(current, template, read_owned(owned_path))
        if merged != current:
            text = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True, default_flow_style=False)
            write_atomic(config_path, text.encode("utf-8"))
            log("updated mrprov's parts of %s" % config_path)
    if read_owned(owned_path) != owned_now:
        write_atomic(owned_path, (json.dumps(owned_now, sort_keys=True, indent=1) + "\n").encode("utf-8"))


def main(argv):
    template, config, command = parse_args(argv)
    converge(template, config)
    if command:
        os.execvp(command[0], command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
