"""Streaming multipart/form-data upload parser, a port of
pve-http-server's file_upload_multipart (src/PVE/APIServer/AnyEvent.pm).

The same phases and the same regular expressions: phase 0 drops anything
before the first delimiter, phase 1 takes the fields `content`,
`checksum-algorithm`, `checksum` (in that order, each only if present) and
then requires the file part named `filename`, phase 2 streams the file data to
disk keeping only a boundary-sized tail in memory, until the close delimiter.
The file must be the last part. Errors are the Perl texts (HTTP 500).
"""
import hashlib
import re


class UploadError(Exception):
    pass


NL = rb"\r?\n"
ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")


def parse_content_type(ctype):
    """parse_content_type: (type, boundary or None)."""
    parts = re.split(r"\s*[;,]\s*", ctype)
    ct, params = parts[0], parts[1:]
    for v in params:
        m = re.fullmatch(r"\s*boundary\s*=\s*(\S+?)\s*", v)
        if m:
            return ct, m.group(1)
    return ct, None


class MultipartUpload:
    """Feed it the body chunk by chunk (`feed`); `done` becomes True once the
    close delimiter has been seen. File bytes go to `outfh`; a running
    hash of the algorithm named in the `checksum-algorithm` field is kept so
    the task can verify the checksum without reading the file again."""

    def __init__(self, boundary, size, outfh, params):
        self.boundary = boundary.encode("latin-1")
        self.size = size
        self.outfh = outfh
        self.params = params
        self.boundlen = len(self.boundary) + 8
        self.phase = 0
        self.read = 0
        self.bytes = 0
        self.rbuf = b""
        self.hash = None  # of the algorithm named in `checksum-algorithm`
        b = re.escape(self.boundary)
        self.delim_re = b"--" + b + NL
        self.close_delim = b"--" + self.boundary + b"--"

    @property
    def done(self):
        return self.phase == 100

    def _extract_form_disposition(self, name):
        rx = (b"^" + self.delim_re + rb".*?Content-Disposition: (.*?); name=\"" + name.encode()
              + b"\"(.*?" + self.delim_re + b")")
        m = re.search(rx, self.rbuf, re.S)
        if not m:
            return
        self.rbuf = m.group(2) + self.rbuf[m.end():]
        self._assert_form_disposition(m.group(1))
        self._remove_until_data()
        m2 = re.search(b"^(.*?)(" + self.delim_re + b")", self.rbuf, re.S)
        if m2:
            self.rbuf = self.rbuf[m2.start(2):]
            value = m2.group(1).decode("utf-8", "surrogateescape").strip()
            self.params[name] = value

    @staticmethod
    def _assert_form_disposition(v):
        if v != b"form-data":
            raise UploadError("wrong Content-Disposition '%s' in multipart, expected 'form-data'\n"
                              % v.decode("latin-1"))

    def _remove_until_data(self):
        self.rbuf = re.sub(b"^.*?(?:" + NL + b"){2}", b"", self.rbuf, count=1, flags=re.S)

    def _write(self, data):
        if not data:
            return
        self.outfh.write(data)
        if self.hash:
            self.hash.update(data)
        self.bytes += len(data)

    def feed(self, chunk):
        self.rbuf += chunk
        startlen = len(self.rbuf)
        if self.phase == 0:
            m = re.search(b"^.*?(" + self.delim_re + b")", self.rbuf, re.S)
            if m:
                self.rbuf = self.rbuf[m.start(1):]
                self.read += startlen - len(self.rbuf)
                self.phase = 1
        if self.phase == 1:
            for name in ("content", "checksum-algorithm", "checksum"):
                self._extract_form_disposition(name)
            m = re.search(b"^" + self.delim_re + rb"Content-Disposition: (.*?); name=\"(.*?)\"; filename=\"([^\"]+)\"",
                          self.rbuf, re.S)
            if m:
                self.rbuf = self.rbuf[m.end():]
                self._assert_form_disposition(m.group(1))
                if m.group(2) != b"filename":
                    raise UploadError("wrong field name '%s' for file upload, expected 'filename'"
                                      % m.group(2).decode("latin-1"))
                self.phase = 2
                self.params["filename"] = m.group(3).decode("utf-8", "surrogateescape").strip()
                self._remove_until_data()
                algo = self.params.get("checksum-algorithm")
                if algo in ALGORITHMS:
                    self.hash = hashlib.new(algo)
        if self.phase == 2:
            # Perl: s/^(.*?)${newline_re}?+${close_delim_re}.*$//s -- the data
            # ends before the first close delimiter and the newline right
            # before it. A literal find keeps this at memory speed.
            i = self.rbuf.find(self.close_delim)
            if i >= 0:
                if self.rbuf[i - 2:i] == b"\r\n":
                    i -= 2
                elif self.rbuf[i - 1:i] == b"\n":
                    i -= 1
                self._write(self.rbuf[:i])
                self.rbuf = b""
                self.phase = 100
            else:
                n = len(self.rbuf) - self.boundlen
                if n > 0:
                    self._write(self.rbuf[:n])
                    self.rbuf = self.rbuf[n:]
        self.read += startlen - len(self.rbuf)
        if self.read + len(self.rbuf) >= self.size and self.phase != 100:
            raise UploadError("upload failed")
