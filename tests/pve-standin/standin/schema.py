"""Request parameters and their validation, as pve-http-server and
PVE::JSONSchema (pve-common) do it.

Values are kept the way Perl sees them: strings (numbers from a JSON body are
stringified like Perl does), None for undef, PerlBool for JSON true/false,
lists and dicts. The checks and their messages follow JSONSchema.pm's
check_prop / check_object / check_type / check_format / parse_property_string.
"""
import json
import re
import urllib.parse


class PerlBool:
    """A JSON true/false as JSON::PP decodes it: a reference, accepted only by
    boolean parameters."""

    def __init__(self, v):
        self.v = bool(v)

    def __str__(self):
        return "1" if self.v else "0"


class ParamError(Exception):
    """HTTP 400 "Parameter verification failed." with an errors object."""

    def __init__(self, errors, message="Parameter verification failed.\n"):
        super().__init__(message)
        self.errors = errors
        self.message = message


class FormatError(Exception):
    """A format check's die; str() is what Perl's "$@" would print."""


def perl_regex(p):
    """A Perl regex from the schema (possibly stringified qr//) as Python."""
    return p.replace("(?^:", "(?:").replace("\\z", "\\Z")


def decode_urlencoded(data):
    """pve-http-server's decode_urlencoded: split on & and ;, keys and values
    percent-decoded, '+' is a space; a pair without '=' (or with an empty value,
    Perl's split drops trailing empty fields) gives undef; a value is cut at a
    second raw '='; repeated keys become a list."""
    res = {}
    if not data:
        return res
    fields = re.split(r"[&;]", data)
    while fields and fields[-1] == "":
        fields.pop()
    for kv in fields:
        parts = kv.split("=")
        while parts and parts[-1] == "":
            parts.pop()
        k = parts[0] if parts else ""
        v = parts[1] if len(parts) > 1 else None
        k = _pct(k.replace("+", " "))
        if v is not None:
            v = _pct(v.replace("+", " "))
            try:
                v = v.encode("latin-1").decode("utf-8")
            except UnicodeError:
                pass
            old = res.get(k)
            if old is not None:
                v = (old if isinstance(old, list) else [old]) + [v]
        res[k] = v
    return res


def _pct(s):
    # only %XX pairs are decoded, into raw bytes (kept as latin-1 chars)
    return re.sub(r"%([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def perlify_json(v):
    """A decoded JSON value as Perl would hold it."""
    if isinstance(v, bool):
        return PerlBool(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if v != int(v) else str(int(v))
    if isinstance(v, list):
        return [perlify_json(x) for x in v]
    if isinstance(v, dict):
        return {k: perlify_json(x) for k, x in v.items()}
    return v


def decode_json_body(body):
    try:
        v = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeError) as e:
        raise ValueError("malformed JSON string: %s" % e)
    if not isinstance(v, dict):
        raise ValueError("JSON text must be an object")
    return perlify_json(v)


# ---------------------------------------------------------------- formats

IPV4OCTET = r"(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])"
IPV4RE = r"(?:(?:%s\.){3}%s)" % (IPV4OCTET, IPV4OCTET)
_H16 = r"(?:[0-9a-fA-F]{1,4})"
_LS32 = r"(?:(?:%s|%s:%s))" % (IPV4RE, _H16, _H16)
IPV6RE = "(?:" + "|".join([
    r"(?:(?:(?:%s:){6})%s)" % (_H16, _LS32),
    r"(?:(?:::(?:%s:){5})%s)" % (_H16, _LS32),
    r"(?:(?:(?:%s)?::(?:%s:){4})%s)" % (_H16, _H16, _LS32),
    r"(?:(?:(?:(?:%s:){0,1}%s)?::(?:%s:){3})%s)" % (_H16, _H16, _H16, _LS32),
    r"(?:(?:(?:(?:%s:){0,2}%s)?::(?:%s:){2})%s)" % (_H16, _H16, _H16, _LS32),
    r"(?:(?:(?:(?:%s:){0,3}%s)?::(?:%s:){1})%s)" % (_H16, _H16, _H16, _LS32),
    r"(?:(?:(?:(?:%s:){0,4}%s)?::)%s)" % (_H16, _H16, _LS32),
    r"(?:(?:(?:(?:%s:){0,5}%s)?::)%s)" % (_H16, _H16, _H16),
    r"(?:(?:(?:(?:%s:){0,6}%s)?::))" % (_H16, _H16),
]) + ")"


def _m(rx, v, flags=0):
    return re.fullmatch(rx, v, flags) is not None


def _id(v, kind):
    if len(v) < 2:
        raise FormatError("%s ID '%s' cannot be shorter than 2 characters\n" % (kind, v))
    if not _m(r"[a-z][a-z0-9\-_.]*[a-z0-9]", v, re.I):
        raise FormatError("%s ID '%s' contains illegal characters\n" % (kind, v))


def _simple(rx, msg, flags=0):
    def check(v):
        if not _m(rx, v, flags):
            raise FormatError(msg.replace("%v", v))
    return check


def _cidrv4(v):
    m = re.fullmatch("(?:%s)/(\\d+)" % IPV4RE, v)
    return bool(m) and 7 < int(m.group(1)) <= 32


def _cidrv6(v):
    m = re.fullmatch("(?:%s)/(\\d+)" % IPV6RE, v)
    return bool(m) and 7 < int(m.group(1)) <= 128


def _cidr(v):
    if not (_cidrv4(v) or _cidrv6(v)):
        raise FormatError("value does not look like a valid CIDR network\n")


def _ipv4_config(v):
    if not (v in ("dhcp", "manual") or _cidrv4(v)):
        raise FormatError("value does not look like a valid ipv4 network configuration\n")


def _ipv6_config(v):
    if not (v in ("auto", "dhcp", "manual") or _cidrv6(v)):
        raise FormatError("value does not look like a valid ipv6 network configuration\n")


DNS_NAME = r"(?:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)"


def _address(v):
    if not (_m("(?:%s)|(?:%s)" % (IPV4RE, IPV6RE), v) or _m(DNS_NAME, v)):
        raise FormatError("value does not look like a valid address: %s\n" % v)


def parse_size(v):
    m = re.fullmatch(r"(\d+(\.\d+)?)([KMGT](?:iB)?)?", v)
    if not m:
        return None
    size = float(m.group(1))
    unit = (m.group(3) or "")[:1]
    size *= {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
    return int(size)


def _disk_size(v):
    if parse_size(v) is None:
        raise FormatError("value does not look like a valid disk size: %s\n" % v)


def _volume_id(v):
    if not _m(r"[a-z][a-z0-9\-_.]*[a-z0-9]:.+", v, re.I | re.S):
        raise FormatError("unable to parse volume ID '%s'\n" % v)


def _volume_id_or_absolute_path(v):
    if v.startswith("/"):
        return
    _volume_id(v)


def _volume_id_or_qm_path(v):
    if v in ("none", "cdrom"):
        return
    _volume_id_or_absolute_path(v)


VALID_CONTENT = {"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"}


def _content(v):
    if v == "import" or v in VALID_CONTENT:
        return
    raise FormatError("invalid content type '%s'\n" % v)


def _startup_order(v):
    ok = bool(v)
    for p in v.split(","):
        if re.fullmatch(r"\s*", p):
            continue
        if not (re.fullmatch(r"(order=)?\d+", p) or re.fullmatch(r"(up|down)=\d+", p)):
            ok = False
    if not ok:
        raise FormatError("unable to parse startup options\n")


def _day_of_week(v):
    if v not in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
        raise FormatError("invalid day '%s'\n" % v)


def _lxc_ip_with_ll_iface(v):
    m = re.fullmatch(r"(fe80:[^%]*)%(.+)", v)
    if m:
        v = m.group(1)
    if not _m("(?:%s)|(?:%s)" % (IPV4RE, IPV6RE), v):
        raise FormatError("value does not look like a valid IP address\n")


def _lenient(v):
    """A format the stand-in does not check (see README)."""


IPCONFIG_FMT = {
    "ip": {"type": "string", "format": "pve-ipv4-config", "optional": 1},
    "gw": {"type": "string", "format": "ipv4", "optional": 1, "requires": "ip"},
    "ip6": {"type": "string", "format": "pve-ipv6-config", "optional": 1},
    "gw6": {"type": "string", "format": "ipv6", "optional": 1, "requires": "ip6"},
}

BOOT_FMT = {
    "legacy": {"optional": 1, "default_key": 1, "type": "string", "pattern": "[acdn]{1,4}"},
    "order": {"optional": 1, "type": "string", "format": "pve-qm-bootdev-list"},
}

FORMATS = {
    "string": _lenient,
    "regex": _lenient,
    "urlencoded": _simple(r"[-%a-zA-Z0-9_.!~*'()]*", "invalid urlencoded string: %v\n"),
    "pve-configid": _simple(r"[a-z][a-z0-9_-]+", "invalid configuration ID '%v'\n", re.I),
    "pve-storage-id": lambda v: _id(v, "storage"),
    "pve-bridge-id": _simple(r"[-_.\w\d]+", "invalid bridge ID '%v'\n", re.A),
    "pve-vmid": _simple(r"[1-9][0-9]{2,8}", "value does not look like a valid VM ID\n"),
    "pve-node": _simple(r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)",
                        "value does not look like a valid node name\n"),
    "mac-addr": _simple(r"[a-f0-9][02468ace](?::[a-f0-9]{2}){5}",
                        "value does not look like a valid unicast MAC address\n", re.I),
    "ipv4": _simple(IPV4RE, "value does not look like a valid IPv4 address\n"),
    "ipv6": _simple(IPV6RE, "value does not look like a valid IPv6 address\n"),
    "ip": _simple("(?:%s)|(?:%s)" % (IPV4RE, IPV6RE), "value does not look like a valid IP address\n"),
    "CIDR": _cidr,
    "pve-ipv4-config": _ipv4_config,
    "pve-ipv6-config": _ipv6_config,
    "dns-name": _simple(DNS_NAME, "value does not look like a valid DNS name\n"),
    "address": _address,
    "disk-size": _disk_size,
    "pve-startup-order": _startup_order,
    "pve-tag": _simple(r"[a-z0-9_][a-z0-9_\-+.]*", "invalid characters in tag\n", re.I),
    "pve-volume-id": _volume_id,
    "pve-volume-id-or-absolute-path": _volume_id_or_absolute_path,
    "pve-volume-id-or-qm-path": _volume_id_or_qm_path,
    "pve-storage-content": _content,
    "pve-day-of-week": _day_of_week,
    "lxc-ip-with-ll-iface": _lxc_ip_with_ll_iface,
    "pve-poolid": _simple(r"[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+){0,2}", "invalid pool ID '%v'\n"),
    "email-or-username": _lenient,
    "pve-calendar-event": _lenient,
    "pve-ct-timezone": _lenient,
    "pve-lxc-mp-string": _lenient,
    "pve-lxc-dev-string": _lenient,
    "pve-cpuset": _lenient,
    "pve-hotplug-features": _lenient,
    "pve-qm-bootdisk": _simple(r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+", "invalid drive name '%v'\n"),
    "pve-qm-bootdev": _lenient,
    "storage-pair": _lenient,
    # named property-string formats
    "pve-qm-ipconfig": IPCONFIG_FMT,
    "pve-qm-boot": BOOT_FMT,
}
# named hash formats the stand-in does not model (accepted unchecked; README)
for _n in ("pve-vm-cpu-conf", "pve-qm-cicustom", "pve-qm-hostpci", "pve-qm-ide", "pve-qm-rng",
           "pve-qm-smbios1", "pve-qm-watchdog", "pve-qemu-sev-fmt", "pve-qemu-tdx-fmt",
           "backup-fleecing", "backup-performance", "prune-backups"):
    FORMATS[_n] = _lenient


def split_list(v):
    if "\0" in v:
        return v.split("\0")
    v = re.sub(r"[,;]", " ", v).lstrip()
    return [x for x in re.split(r"\s+", v) if x != ""] if v else []


def check_format(fmt, value, path):
    if isinstance(fmt, dict):
        return parse_property_string(fmt, value, path)
    m = re.fullmatch(r"(.*?)(?:-(list|opt))?", fmt)
    name, kind = m.group(1), m.group(2)
    reg = FORMATS.get(name)
    if reg is None:
        raise FormatError("undefined format '%s'\n" % fmt)
    if kind == "list":
        for v in split_list(value):
            reg(v)
    elif kind == "opt":
        if value:
            reg(value)
    elif isinstance(reg, dict):
        return parse_property_string(reg, value, path)
    else:
        reg(value)
    return None


def parse_boolean(v):
    if re.fullmatch(r"1|on|yes|true", v, re.I):
        return "1"
    if re.fullmatch(r"0|off|no|false", v, re.I):
        return "0"
    return None


def parse_property_string(fmt, data, path=""):
    """PVE::JSONSchema::parse_property_string: returns the dict of sub-keys
    (booleans normalized to "1"/"0", aliases resolved); raises FormatError."""
    res = {}
    default_key = None
    for part in data.split(","):
        if re.fullmatch(r"\s*", part):
            continue
        m = re.fullmatch(r"([^=]+)=(.+)", part, re.S)
        if m:
            k, v = m.group(1), m.group(2)
            if k in res:
                raise FormatError("duplicate key in comma-separated list property: %s\n" % k)
            schema = fmt.get(k)
            if schema and schema.get("alias"):
                key_alias = schema.get("keyAlias")
                if key_alias:
                    if key_alias in res:
                        raise FormatError("key alias '%s' is already defined\n" % key_alias)
                    res[key_alias] = k
                k = schema["alias"]
                schema = fmt.get(k)
                if k in res:
                    raise FormatError("key '%s' is already defined (via alias)\n" % k)
            if not schema:
                raise FormatError("invalid key in comma-separated list property: %s\n" % k)
            if schema.get("type") == "boolean":
                v = parse_boolean(v) or v
            res[k] = v
        elif "=" not in part:
            if default_key:
                raise FormatError("duplicate key in comma-separated list property: %s\n" % default_key)
            for key, sch in fmt.items():
                if sch.get("default_key"):
                    default_key = key
                    if not res.get(key):
                        if sch.get("type") == "boolean":
                            part = parse_boolean(part) or part
                        res[key] = part
                        break
                    raise FormatError("duplicate key in comma-separated list property: %s\n" % key)
            if not default_key:
                raise FormatError("value without key, but schema does not define a default key\n")
        else:
            raise FormatError("missing key in comma-separated list property\n")
    errors = {}
    check_object(path, fmt, res, 0, errors)
    if errors:
        raise FormatError("format error\n" + "".join("%s: %s\n" % (k, v) for k, v in errors.items()))
    return res


# ---------------------------------------------------------------- checks

def add_error(errors, path, msg):
    path = path or "_root"
    errors[path] = errors[path] + "\\n" + msg if path in errors else msg


def is_number(v):
    return re.fullmatch(r"[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?", v) is not None


def is_integer(v):
    return re.fullmatch(r"[+-]?\d+", v) is not None


def _reftype(v):
    if isinstance(v, list):
        return "ARRAY"
    if isinstance(v, dict):
        return "HASH"
    if isinstance(v, PerlBool):
        return "JSON::PP::Boolean"
    return ""


def check_type(path, typ, value, errors):
    if not typ or typ == "any":
        return True
    vt = _reftype(value)
    if typ == "array":
        if vt != "ARRAY":
            add_error(errors, path, "type check ('array') failed")
            return False
        return True
    if typ == "object":
        if vt != "HASH":
            add_error(errors, path, "type check ('object') failed")
            return False
        return True
    if vt:
        if typ == "boolean" and vt == "JSON::PP::Boolean":
            return True
        add_error(errors, path, "type check ('%s') failed - got %s" % (typ, vt))
        return False
    if typ == "boolean" and value not in ("1", "0"):
        add_error(errors, path, "type check ('boolean') failed - got '%s'" % value)
        return False
    if typ == "integer" and not is_integer(value):
        add_error(errors, path, "type check ('integer') failed - got '%s'" % value)
        return False
    if typ == "number" and not is_number(value):
        add_error(errors, path, "type check ('number') failed - got '%s'" % value)
        return False
    return True


def _fmt_num(x):
    x = float(x)
    return str(int(x)) if x == int(x) else str(x)


def check_prop(value, schema, path, errors):
    if schema.get("alias"):
        return
    if value is None:
        if not schema.get("optional") and not schema.get("group"):
            add_error(errors, path, "property is missing and it is not optional")
        return
    if not check_type(path, schema.get("type"), value, errors):
        return
    if isinstance(value, list):
        if schema.get("items"):
            for i, el in enumerate(value):
                check_prop(el, schema["items"], "%s[%d]" % (path, i), errors)
        return
    if isinstance(value, dict):
        if schema.get("properties") or schema.get("additionalProperties"):
            check_object(path, schema.get("properties") or {}, value,
                         schema.get("additionalProperties"), errors)
        return
    value = str(value)
    fmt = schema.get("format")
    if fmt:
        try:
            check_format(fmt, value, path)
        except FormatError as e:
            add_error(errors, path, "invalid format - %s" % e)
            return
    if schema.get("pattern") and not re.fullmatch(perl_regex(schema["pattern"]), value, re.S):
        add_error(errors, path, "value does not match the regex pattern")
        return
    if schema.get("maxLength") is not None and len(value) > int(schema["maxLength"]):
        add_error(errors, path, "value may only be %s characters long" % schema["maxLength"])
        return
    if schema.get("minLength") is not None and len(value) < int(schema["minLength"]):
        add_error(errors, path, "value must be at least %s characters long" % schema["minLength"])
        return
    if is_number(value):
        if schema.get("maximum") is not None and float(value) > float(schema["maximum"]):
            add_error(errors, path, "value must have a maximum value of %s" % _fmt_num(schema["maximum"]))
            return
        if schema.get("minimum") is not None and float(value) < float(schema["minimum"]):
            add_error(errors, path, "value must have a minimum value of %s" % _fmt_num(schema["minimum"]))
            return
    if schema.get("enum") and value not in schema["enum"]:
        add_error(errors, path, "value '%s' does not have a value in the enumeration '%s'"
                  % (value, ", ".join(schema["enum"])))


# how many of each indexed key `name[n]` exist (qemu-server / pve-container)
INDEXED_MAX = {
    "net": 32, "serial": 4, "parallel": 3, "ide": 4, "scsi": 31, "virtio": 16, "sata": 6,
    "unused": 256, "mp": 256, "dev": 256, "ipconfig": 32, "hostpci": 16, "usb": 14,
    "numa": 8, "virtiofs": 10,
}


def prop_schema(props, key):
    """The schema of `key`, resolving indexed keys (`net0` → `net[n]`)."""
    if key in props:
        return props[key]
    m = re.fullmatch(r"([a-z]+)(\d+)", key)
    if m and m.group(1) + "[n]" in props:
        n = int(m.group(2))
        if str(n) == m.group(2) and n < INDEXED_MAX.get(m.group(1), 256):
            return props[m.group(1) + "[n]"]
    return None


def check_object(path, props, value, additional, errors):
    def sub(k):
        return "%s.%s" % (path, k) if path else k
    for k in list(value):
        s = prop_schema(props, k)
        if s and s.get("alias"):
            alias = s["alias"]
            if value.get(alias) is not None:
                add_error(errors, sub(k), "cannot set both '%s' and its alias target '%s'" % (k, alias))
            else:
                value[alias] = value.pop(k)
    for k, s in props.items():
        if k.endswith("[n]"):
            continue
        check_prop(value.get(k), s, sub(k), errors)
    for k in list(value):
        s = prop_schema(props, k)
        if s:
            if k not in props:
                check_prop(value[k], s, sub(k), errors)
            req = s.get("requires")
            if req and isinstance(req, str) and value.get(req) is None:
                add_error(errors, sub(req), "missing property required by '%s'" % sub(k))
            continue
        if additional is not None and not additional:
            add_error(errors, sub(k), "property is not defined in schema and the schema does not allow additional properties")


def validate(params, info):
    """Validate the merged request parameters against an endpoint's
    `parameters`; raises ParamError like PVE's RESTHandler::handle."""
    schema = info.get("parameters") or {}
    errors = {}
    # normalize_legacy_param_formats: a list for a string-list param is joined
    for k, v in list(params.items()):
        s = prop_schema(schema.get("properties") or {}, k)
        if s and v:
            if isinstance(v, list) and s.get("type") == "string" and \
                    isinstance(s.get("format"), str) and s["format"].endswith("-list"):
                params[k] = ",".join(str(x) for x in v)
            elif not isinstance(v, list) and s.get("type") == "array":
                params[k] = [v]
    check_object("", schema.get("properties") or {}, params,
                 schema.get("additionalProperties", 1), errors)
    if errors:
        raise ParamError(errors)


def normalize(params):
    """After validation: JSON booleans become "1"/"0" like PVE's checked
    values, so handlers see one representation."""
    def norm(v):
        if isinstance(v, PerlBool):
            return str(v)
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v
    return {k: norm(v) for k, v in params.items()}


def url_unescape(s):
    return urllib.parse.unquote(s, errors="surrogateescape")
