"""Retrieval pairs from documentation installed on this machine: more varied training data, and dev sets
from sources training never sees (`reprank train sources`).

The shipped encoder saw only Debian package descriptions, so its dev score says little about other
text. Each builder yields `Record(query, text, title)` pairs built offline, a short description as the
query and the longer text it describes as the document:

- training: `manpages` (sections 1, 5, 7, 8: NAME description -> DESCRIPTION), `pydoc` (docstring
  summary -> the rest of the docstring, read with `ast`, nothing imported) and `sphinx` (a section
  heading of Sphinx-built HTML documentation -> the section's text: short topic queries);
- out-of-domain dev: `perlpod` (core Perl POD: NAME description -> DESCRIPTION) and `info` (GNU Info
  concept-index entry -> the node it points to).

No software project feeds both sides: man pages and Sphinx documentation of Perl and of every Debian
source package that ships an Info manual are left out of training (`dev_packages`), so a dev query
cannot have been trained on in another form. Training folders get `train` plus a small `heldout` split
(and `heldout/`, a CPU-sized folder for it); dev folders get `dev` only, over at most a few thousand
documents.
"""

from __future__ import annotations

import ast
import glob
import gzip
import hashlib
import html
import inspect
import json
import os
import random
import re
import subprocess
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

MIN_DOC_WORDS = 30  # shorter texts say too little to be found by anything but their title
MAX_DOC_WORDS = 300  # about one encoder window: training reads no further; a dev document stays one passage
MAN_SECTIONS = "1578"  # commands, file formats, overviews, administration
DPKG_INFO = Path("/var/lib/dpkg/info")


class Record(NamedTuple):
    query: str | None  # None: a document no query points to (a dev set's distractor)
    text: str
    title: str


def words(text: str) -> int:
    return len(text.split())


def paragraphs(text: str) -> str:
    """Blank-line separated paragraphs, each on one line with single spaces (the Debian set's shape)."""
    paras = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paras if p)


def clip(text: str, max_words: int = MAX_DOC_WORDS) -> str:
    """The first `max_words` words, the paragraph breaks kept."""
    m = re.match(rf"\s*(?:\S+\s+){{{max_words}}}", text)
    return text[: m.end()].rstrip() if m else text


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


class Seen:
    """Queries and documents taken so far (case and spacing aside): one document per description and back."""

    def __init__(self) -> None:
        self.queries: set[str] = set()
        self.docs: set[str] = set()

    def add(self, r: Record) -> bool:
        """False for a pair whose query or document was already taken."""
        q, d = _key(r.query or ""), _key(r.text)
        if (q and q in self.queries) or d in self.docs:
            return False
        self.queries.add(q)
        self.docs.add(d)
        return True


def unique(records: Iterable[Record]) -> Iterator[Record]:
    seen = Seen()
    return (r for r in records if seen.add(r))


def _doc(text: str, title: str) -> Record | None:
    text = clip(paragraphs(text))
    return Record(None, text, title) if words(text) >= MIN_DOC_WORDS else None


# --- Debian package ownership: which pages and manuals belong to which source package -----------------

def dpkg_owners(prefix: str) -> dict[str, str]:
    """Installed file under `prefix` -> its binary package (from dpkg's file lists; empty without dpkg)."""
    owners = {}
    for lst in sorted(DPKG_INFO.glob("*.list")):
        pkg = lst.stem.split(":")[0]
        for line in lst.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                owners[line] = pkg
    return owners


def dev_packages(info_root: str = "/usr/share/info") -> frozenset[str]:
    """Binary packages built from Perl's source or from a source that ships an Info manual: their man
    pages stay out of training, as the dev sets are built from those projects' docs."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${binary:Package}\t${source:Package}\n"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return frozenset()
    source = {}
    for line in out.splitlines():
        pkg, _, src = line.partition("\t")
        source[pkg.split(":")[0]] = src.split()[0] if src else pkg.split(":")[0]
    info_packages = set(dpkg_owners(info_root.rstrip("/") + "/").values())
    dev_sources = {"perl"} | {source.get(p, p) for p in info_packages}
    return frozenset(p for p, s in source.items() if s in dev_sources)


# --- training: manual pages ---------------------------------------------------------------------------

_PAGE = re.compile(r"^(?P<name>.+)\.(?P<section>[1-9])(?P<ext>[a-z0-9]*)(?:\.gz)?$")
_NAME_DASH = re.compile(r"\s+(?:\\?-|—|–|−)+\s+")


def render_man(path: str | Path) -> str:
    """A page as `man` prints it, one line per paragraph (a wide MANWIDTH), overstrikes removed."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "MANWIDTH": "2000"}
    out = subprocess.run(["man", "-l", "-P", "cat", str(path)], capture_output=True, text=True, env=env,
                         timeout=60, errors="replace").stdout
    return re.sub(r"\x1b\[[0-9;]*m", "", re.sub(r".\x08", "", out))


def man_sections(page: str) -> dict[str, str]:
    """Rendered page -> {heading: body}; headings are the lines that start in column 0 (the running
    header and footer lines make empty sections of their own)."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in page.splitlines():
        if line and not line[0].isspace():
            current = sections.setdefault(line.strip().upper(), [])
        else:
            current.append(line)
    return {h: "\n".join(body) for h, body in sections.items()}


def man_record(page: str, title: str) -> Record | None:
    """NAME's description -> DESCRIPTION, or None when either is missing or too short."""
    s = man_sections(page)
    name, body = " ".join(s.get("NAME", "").split()), s.get("DESCRIPTION", "")
    parts = _NAME_DASH.split(name, maxsplit=1)
    if len(parts) < 2 or words(parts[1]) < 3:
        return None
    doc = _doc(body, title)
    return doc._replace(query=parts[1].strip().rstrip(".")) if doc else None


def _is_stub(path: Path) -> bool:
    """A `.so other-page` redirect: the page it names is read in its own right."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read(4) == b".so "
    except OSError:
        return True


def manpages(root: str | Path = "/usr/share/man", *, per_package: int = 150, seed: int = 42,
             exclude_packages: frozenset[str] = frozenset(), owners: dict[str, str] | None = None,
             render: Callable[[Path], str] = render_man) -> Iterator[Record]:
    """Pages of sections 1/5/7/8 directly under `root` (English): a seeded sample of at most
    `per_package` pairs per owning package, so one project (16k gcloud pages) cannot dominate. Pages of
    `exclude_packages` and every page whose name starts with "perl" are skipped (the dev sources)."""
    root = Path(root)
    owners = dpkg_owners(str(root) + "/") if owners is None else owners
    by_package: dict[str, list[tuple[Path, str]]] = {}
    for section in MAN_SECTIONS:
        for path in sorted((root / f"man{section}").glob("*")):
            m = _PAGE.match(path.name)
            if not m or path.is_symlink() or not path.is_file() or m["name"].lower().startswith("perl"):
                continue
            pkg = owners.get(str(path), "")
            if pkg not in exclude_packages:
                by_package.setdefault(pkg, []).append((path, f"{m['name']}({m['section']}{m['ext']})"))

    seen = Seen()
    for pkg in sorted(by_package):
        pages = by_package[pkg]
        random.Random(f"{seed}:{pkg}").shuffle(pages)
        kept = 0
        for path, title in pages:
            if kept >= per_package:
                break
            rec = None if _is_stub(path) else man_record(render(path), title)
            if rec and seen.add(rec):
                kept += 1
                yield rec


# --- training: Python docstrings ------------------------------------------------------------------------

# not a summary: a pointer elsewhere, or an argument's description (`x (int, *optional*): ...`) at the top
_SKIP_SUMMARY = re.compile(r"^(see |alias |deprecated|same as |copied from |note:)|^\w+ \([^)]*\):"
                           r"|\*optional\*|>>>|\{", re.I)


def _signature(node: ast.AST) -> str:
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return ""
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
    return "(" + ", ".join(names) + ")"


def rst_text(text: str) -> str:
    """Sphinx roles and inline markup read as plain text: :class:`~a.B` -> a.B, ``x`` -> x."""
    text = re.sub(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`(?:\\s)?", r"\1", text)
    return re.sub(r"`+([^`]+)`+", r"\1", text)


def docstring_record(doc: str, title: str) -> Record | None:
    """Summary sentence -> the rest of the docstring. The summary is taken out of the document: left in,
    the query would be a verbatim prefix of its own document, which teaches copying, not retrieval."""
    doc = rst_text(inspect.cleandoc(doc))
    if words(doc) < MIN_DOC_WORDS:
        return None
    first, _, rest = doc.partition("\n\n")
    first = " ".join(first.split())
    summary = re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", first, maxsplit=1)[0]
    tail = first[len(summary):]
    summary = summary.rstrip(".").strip()
    if not 4 <= words(summary) <= 30 or _SKIP_SUMMARY.search(summary):
        return None
    body = re.sub(r"(?m)^\s*[-=~^*]{3,}\s*$", "", tail + "\n\n" + rest)  # RST/numpydoc heading underlines
    rec = _doc(body, title)
    return rec._replace(query=summary) if rec else None


def module_docstrings(path: Path, module: str) -> Iterator[Record]:
    """Public classes, functions and methods of one source file (parsed, never imported)."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError):
        return

    def walk(body: list[ast.stmt], prefix: str) -> Iterator[Record]:
        for node in body:
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) \
                    or node.name.startswith("_"):
                continue
            name = f"{prefix}.{node.name}"
            doc = ast.get_docstring(node, clean=False)
            rec = docstring_record(doc, (name + _signature(node))[:120]) if doc else None
            if rec:
                yield rec
            if isinstance(node, ast.ClassDef):
                yield from walk(node.body, name)

    yield from walk(tree.body, module)


def _python_files(package: Path) -> list[Path]:
    if package.is_file():
        return [package]
    skip = {"tests", "test", "testing", "_vendor", "vendor", "vendored", "examples", "benchmarks"}
    return sorted(p for p in package.rglob("*.py") if not skip & set(p.relative_to(package).parts[:-1]))


def pydoc(root: str | Path | None = None, *, per_package: int = 300, seed: int = 42) -> Iterator[Record]:
    """Docstrings of the top-level packages in `root` (default: this interpreter's site-packages): at
    most `per_package` pairs each, from its files in a seeded order, so torch or transformers cannot
    dominate; private names, tests and vendored copies are skipped."""
    root = Path(root or sysconfig.get_paths()["purelib"])
    tops = sorted(p for p in root.iterdir() if not p.name.startswith(("_", ".")) and (
        (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.is_file())))

    seen = Seen()
    for top in tops:
        files = _python_files(top)
        random.Random(f"{seed}:{top.name}").shuffle(files)
        kept = 0
        for path in files:
            if kept >= per_package:
                break
            parts = path.relative_to(root).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            for rec in module_docstrings(path, module):
                if kept < per_package and seen.add(rec):
                    kept += 1
                    yield rec


# --- dev: Perl POD -------------------------------------------------------------------------------------

_POD_ENTITIES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&", "apos": "'"}


def _pod_entity(body: str) -> str:
    """E<gt>, E<eacute>, E<0x263A>, E<0101> (octal), E<65> -> the character."""
    for pattern, base in ((r"0x[0-9a-fA-F]+", 16), (r"0[0-7]+", 8), (r"\d+", 10)):
        if re.fullmatch(pattern, body):
            return chr(int(body, base))
    return _POD_ENTITIES.get(body) or html.unescape(f"&{body};")


def _pod_code(kind: str, body: str) -> str:
    if kind in "XZ":
        return ""
    if kind == "E":  # < and > held back as private-use characters until the nesting is undone
        return {"<": "\ue000", ">": "\ue001"}.get(char := _pod_entity(body), char)
    if kind == "L":
        if "|" in body:
            return body.split("|", 1)[0]
        if "://" in body:
            return body
        page, _, section = body.replace('"', "").partition("/")
        return f"{section} in {page}" if section and page else section or page
    return body  # B, I, C, F, S: the text itself


def pod_text(text: str) -> str:
    """POD formatting codes removed: B<x> -> x, L<text|target> -> text, E<gt> -> '>', C<< a->b >> -> a->b."""
    for n in (4, 3, 2):
        text = re.sub(rf"([A-Z])<{{{n}}}\s+(.*?)\s+>{{{n}}}", lambda m: _pod_code(m[1], m[2]), text,
                      flags=re.S)
    while True:
        new = re.sub(r"([A-Z])<([^<>]*)>", lambda m: _pod_code(m[1], m[2]), text)
        if new == text:
            return new.replace("\ue000", "<").replace("\ue001", ">")
        text = new


def pod_sections(source: str) -> dict[str, list[str]]:
    """POD blocks of a .pm/.pod file -> {head1 title: its prose paragraphs}. Headings and items become
    paragraphs of their own; code (verbatim paragraphs) and =begin/=for blocks are dropped."""
    pod, inside = [], False
    for line in source.splitlines():
        if re.match(r"^=[a-zA-Z]", line):
            inside = not line.startswith("=cut")
            if not inside:
                pod.append("")
                continue
        if inside:
            pod.append(line)
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    skipping = False
    for para in re.split(r"\n\s*\n", "\n".join(pod)):
        if not para.strip():
            continue
        m = re.match(r"(=\w+)\s*(.*)", para, re.S)
        command, rest = (m[1], m[2]) if m else ("", para)
        if skipping:
            skipping = not command.startswith("=end")
        elif command == "=head1":
            current = sections.setdefault(" ".join(pod_text(rest).split()).upper(), [])  # X<> index terms go
        elif command == "=begin":
            skipping = True
        elif current is None or command in ("=over", "=back", "=for", "=encoding", "=pod", "=cut") \
                or (not command and para[0].isspace()):
            continue
        elif command.startswith(("=head", "=item")) or not command:
            text = re.sub(r"^(\*|\d+\.?)\s*", "", rest) if command == "=item" else rest
            text = " ".join(pod_text(text).split())
            if text:
                current.append(text)
    return sections


def pod_record(source: str) -> Record | None:
    s = pod_sections(source)
    name = " ".join(s.get("NAME", []))
    parts = _NAME_DASH.split(name, maxsplit=1)
    if len(parts) < 2 or words(parts[1]) < 3 or re.match(r"perl\d+delta$", parts[0]):  # release notes
        return None
    doc = _doc("\n\n".join(s.get("DESCRIPTION", [])), parts[0].strip())
    return doc._replace(query=parts[1].strip().rstrip(".")) if doc else None


def perl_pod_roots() -> list[str]:
    return sorted(glob.glob("/usr/share/perl/5.*") + glob.glob("/usr/lib/*/perl/5.*"))


def perlpod(roots: Iterable[str | Path] | None = None) -> Iterator[Record]:
    """NAME description -> DESCRIPTION of Perl's core modules and manuals (perl-modules, perl-base and
    perl-doc's pod/), each real file once (5.36 and 5.36.0 are one folder); a module's .pod wins over
    its .pm."""
    files: dict[str, Path] = {}
    for root in roots or perl_pod_roots():
        for path in sorted(Path(root).rglob("*")):
            if path.suffix in (".pm", ".pod") and path.is_file():
                stem = str(path.resolve().with_suffix(""))
                if path.suffix == ".pod" or stem not in files:
                    files[stem] = path
    yield from unique(r for p in sorted(files.values())
                      if (r := pod_record(p.read_text(encoding="utf-8", errors="replace"))))


# --- training: Sphinx documentation sections -----------------------------------------------------------

_HEADING_QUERY = re.compile(r"[A-Za-z][A-Za-z'-]*(?: [A-Za-z0-9][A-Za-z0-9'-]*)+")  # plain words, two or more
_BLOCKS = {"p", "pre", "li", "dt", "dd", "div", "section", "tr", "table"}  # a paragraph break after each


class _SphinxPage(HTMLParser):
    """One Sphinx HTML page -> [(heading, the section's own text)]: subsections apart, headerlinks,
    scripts and styles left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[list] = []  # [heading, [text chunks]]
        self._open: list[tuple[str, int | None]] = []  # div/section tags, with the section each opens
        self._skip: list[str] = []  # open script, style or headerlink tags: no text
        self._heading: int | None = None

    def _current(self) -> int | None:
        return next((s for _, s in reversed(self._open) if s is not None), None)

    def handle_starttag(self, tag, attrs):
        cls = (dict(attrs).get("class") or "").split()
        if tag in ("div", "section"):
            opens = tag == "section" or "section" in cls
            if opens:
                self.sections.append(["", []])
            self._open.append((tag, len(self.sections) - 1 if opens else None))
        if tag in ("script", "style") or "headerlink" in cls:
            self._skip.append(tag)
        cur = self._current()
        if re.fullmatch(r"h[1-6]", tag) and cur is not None and not self.sections[cur][0]:
            self._heading = cur

    def handle_endtag(self, tag):
        if tag in ("div", "section"):
            while self._open and self._open.pop()[0] != tag:
                pass
        if self._skip and self._skip[-1] == tag:
            self._skip.pop()
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = None
        elif tag in _BLOCKS and (cur := self._current()) is not None:
            self.sections[cur][1].append("\n\n")

    def handle_data(self, data):
        cur = self._current()
        if cur is None or self._skip:
            return
        if self._heading == cur:
            self.sections[cur][0] += data
        else:
            self.sections[cur][1].append(data)


def sphinx_projects(root: str | Path = "/usr/share/doc", exclude_packages: frozenset[str] = frozenset(),
                    owners: dict[str, str] | None = None) -> dict[str, Path]:
    """Project name -> HTML folder of each Sphinx build under `root` (one with a genindex.html), read
    once when several package names link to it; a folder owned by an excluded package is left out."""
    owners = dpkg_owners(str(root).rstrip("/") + "/") if owners is None else owners
    projects: dict[str, Path] = {}
    for index in sorted(Path(root).glob("*/html/genindex.html")):
        folder = index.parent.resolve()
        if folder in projects.values() or owners.get(str(folder / "genindex.html")) in exclude_packages:
            continue
        name = re.sub(r"^python3?-|-doc$", "", folder.parent.name)
        projects[name] = folder
    return projects


def sphinx(root: str | Path = "/usr/share/doc", *, per_project: int = 1500, seed: int = 42,
           exclude_packages: frozenset[str] = frozenset(), owners: dict[str, str] | None = None,
           ) -> Iterator[Record]:
    """A section heading -> the section's own text (the heading taken out), from every Sphinx project's
    HTML under `root`: short topic queries ("Creating the cache table"), the kind of query the
    description-style sources lack. Headings must be two or more plain words (no API names); a heading
    over two sections of a project ("Return value") is no query. At most `per_project` pairs a project,
    a seeded sample."""
    rng = random.Random(seed)
    for project, folder in sphinx_projects(root, exclude_packages, owners).items():
        pairs: dict[str, list[Record]] = {}
        for page in sorted(folder.rglob("*.html")):
            if page.name in ("genindex.html", "search.html", "py-modindex.html") or "_modules" in page.parts:
                continue
            parser = _SphinxPage()
            parser.feed(_read_text(page))
            for heading, chunks in parser.sections:
                heading = " ".join(heading.split())
                if _HEADING_QUERY.fullmatch(heading) and (doc := _doc("".join(chunks), project)):
                    pairs.setdefault(_key(heading), []).append(doc._replace(query=heading))
        single = [found[0] for _, found in sorted(pairs.items()) if len(found) == 1]
        yield from unique(rng.sample(single, min(per_project, len(single))))


# --- dev: GNU Info manuals -----------------------------------------------------------------------------

_INDEX_MARK = "\x00\x08[index\x00\x08]"
_ENTRY = re.compile(r"^\* ([^\n]+?):[ \t]+([^\n]+?)\.\s+\(line\s+(\d+)\)", re.M)  # "(line N)" may wrap


def _is_concept_index(node: str) -> bool:
    return "concept" in node.lower() or node.lower() in ("index", "general index", "primary index")


def _is_phrase(entry: str) -> bool:
    """Two or more plain words and nothing that reads as code: not "-n", "struct sha3_ctx", "f()"."""
    plain = re.findall(r"(?<![\w-])[A-Za-z][A-Za-z'-]+(?![\w(])", entry)
    return len(plain) >= 2 and not re.search(r"[_(){}\[\]<>=$@%\\]", entry)


def info_nodes(text: str) -> dict[str, str]:
    """One manual's text (all its parts, concatenated) -> {node name: raw node text}."""
    nodes = {}
    for chunk in text.split("\x1f"):
        chunk = chunk.lstrip("\n")
        m = re.match(r"File: [^,]*,\s+Node: ([^,\t\n]+)", chunk.replace("\x7f", ""))
        if m:
            nodes[m[1].strip()] = chunk.split("\n", 1)[1] if "\n" in chunk else ""
    return nodes


def info_text(raw: str) -> str:
    """A node's prose: no menu, no heading underlines, `*note X: Y.` read as X."""
    raw = raw.split("\n* Menu:", 1)[0]
    raw = re.sub(r"(?m)^\s*[*=\-.]{3,}\s*$", "", raw)
    raw = re.sub(r"\*[Nn]ote\s+([^:]+?)::", r"\1", raw)
    raw = re.sub(r"\*[Nn]ote\s+([^:]+?):\s*[^.,]+[.,]", r"\1", raw)
    return raw.replace("\x7f", "").replace("‘", "'").replace("’", "'")


def read_info(root: str | Path) -> dict[str, str]:
    """Manual name -> its text, the split parts (`x.info-1.gz`, ...) joined in order."""
    parts: dict[str, list[tuple[int, Path]]] = {}
    for path in Path(root).iterdir():
        m = re.match(r"^(.+)\.info(?:-(\d+))?(?:\.gz)?$", path.name)
        if m and path.is_file():
            parts.setdefault(m[1], []).append((int(m[2] or 0), path))
    return {name: "".join(_read_text(p) for _, p in sorted(files)) for name, files in sorted(parts.items())}


def _read_text(path: Path) -> str:
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def index_entries(raw: str) -> Iterator[tuple[str, str, int]]:
    """(entry, node, line in the node) of an index node's menu; `<1>`-style repeat marks dropped, quotes
    made plain."""
    for entry, node, line in _ENTRY.findall(raw.split(_INDEX_MARK, 1)[1]):
        entry = re.sub(r"\s*<\d+>$", "", entry.replace("\x7f", ""))
        yield entry.replace("\u2018", "'").replace("\u2019", "'"), node.replace("\x7f", "").strip(), int(line)


def info(root: str | Path = "/usr/share/info", *, max_relevant: int = 3) -> Iterator[Record]:
    """Concept-index entry -> each node it points to (nodes of >= MIN_DOC_WORDS words) where the entry's
    line falls within the node's clipped text; an entry found in several manuals is one query. Entries
    naming a symbol or option ("-n", "arcfour_set_key") are no queries, nor entries with over
    `max_relevant` nodes. Nodes no query reaches come as distractors."""
    docs: dict[tuple[str, str], Record] = {}
    raws: dict[tuple[str, str], str] = {}
    targets: dict[str, tuple[str, set[tuple[str, str, int]]]] = {}
    for manual, text in read_info(root).items():
        for node, raw in info_nodes(text).items():
            if _INDEX_MARK in raw:
                if not _is_concept_index(node):
                    continue
                for entry, target, line in index_entries(raw):
                    if _is_phrase(entry):
                        targets.setdefault(_key(entry), (entry, set()))[1].add((manual, target, line))
            elif not re.search(r"license|copying", node, re.I):
                if doc := _doc(info_text(raw), f"{manual}: {node}"):
                    docs[(manual, node)], raws[(manual, node)] = doc, raw

    def within(manual: str, node: str, line: int) -> bool:  # "(line N)" counts the header line as 1
        return words(info_text("\n".join(raws[(manual, node)].split("\n")[:line]))) < MAX_DOC_WORDS - 10

    used = set()
    for _, (entry, nodes) in sorted(targets.items()):
        found = sorted({(m, n) for m, n, line in nodes if (m, n) in docs and within(m, n, line)})
        if 0 < len(found) <= max_relevant:
            used.update(found)
            yield from (docs[n]._replace(query=entry) for n in found)
    yield from (doc for n, doc in sorted(docs.items()) if n not in used)


# --- BEIR folders ---------------------------------------------------------------------------------------

def _id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha1(text.encode()).hexdigest()[:12]


def collect(records: Iterable[Record]) -> tuple[dict[str, str], dict[str, Record], dict[str, set[str]]]:
    """Pairs -> queries {id: text}, documents {id: record} and relevance {query id: doc ids}; a query or
    document repeated (case and spacing aside) is one; ids are hashes of the text, stable across builds."""
    queries: dict[str, str] = {}
    docs: dict[str, Record] = {}
    qrels: dict[str, set[str]] = {}
    for r in records:
        did = _id("d", _key(r.text))
        docs.setdefault(did, r)
        if r.query:
            qid = _id("q", _key(r.query))
            queries.setdefault(qid, r.query)
            qrels.setdefault(qid, set()).add(did)
    return queries, docs, qrels


def write_beir(out: str | Path, queries: dict[str, str], docs: dict[str, Record],
               splits: dict[str, dict[str, set[str]]]) -> None:
    """corpus.jsonl, queries.jsonl (the queries of every split) and qrels/<split>.tsv (grade 1)."""
    out = Path(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": d, "title": r.title, "text": r.text}, ensure_ascii=False) + "\n"
                     for d, r in docs.items())
    qids = [q for q in queries if any(q in rel for rel in splits.values())]
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": q, "text": queries[q]}, ensure_ascii=False) + "\n" for q in qids)
    for split, rel in splits.items():
        with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q}\t{d}\t1\n" for q in sorted(rel) for d in sorted(rel[q]))


def stats(queries: dict[str, str], docs: dict[str, Record], rel: dict[str, set[str]]) -> dict:
    used = {d for ds in rel.values() for d in ds}
    return {"queries": len(rel), "documents": len(docs), "relevant_documents": len(used),
            "avg_query_words": round(sum(words(queries[q]) for q in rel) / max(len(rel), 1), 1),
            "avg_doc_words": round(sum(words(r.text) for r in docs.values()) / max(len(docs), 1), 1)}


def write_training(records: Iterable[Record], out: str | Path, *, heldout: int = 150,
                   max_queries: int | None = None, seed: int = 42, docs_per_query: int = 10) -> dict:
    """`train` and a seeded `heldout` split (queries whose documents no other query shares) over every
    document; `heldout/` holds the held-out queries over their documents plus random train ones, up to
    `docs_per_query` per query, for a CPU-sized `reprank eval --split heldout`."""
    queries, docs, qrels = collect(records)
    rng = random.Random(seed)
    shared = {d for d, n in _doc_counts(qrels).items() if n > 1}
    alone = [q for q in sorted(qrels) if not qrels[q] & shared]
    held = sorted(rng.sample(alone, min(heldout, len(qrels) // 10, len(alone))))
    train = sorted(set(qrels) - set(held))
    if max_queries is not None and max_queries < len(train):
        train = sorted(rng.sample(train, max_queries))
    splits = {"train": {q: qrels[q] for q in train}, "heldout": {q: qrels[q] for q in held}}
    keep = {d for rel in splits.values() for ds in rel.values() for d in ds}
    write_beir(out, queries, {d: r for d, r in docs.items() if d in keep}, splits)
    small = {d for q in held for d in qrels[q]}
    others = sorted({d for q in train for d in qrels[q]} - small)
    small |= set(rng.sample(others, min(len(others), max(len(held) * docs_per_query - len(small), 0))))
    write_beir(Path(out) / "heldout", queries, {d: r for d, r in docs.items() if d in small},
               {"heldout": splits["heldout"]})
    return {split: stats(queries, {d: docs[d] for ds in rel.values() for d in ds}, rel)
            for split, rel in splits.items()} | {"documents": len(keep)}


def _doc_counts(qrels: dict[str, set[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ds in qrels.values():
        for d in ds:
            counts[d] = counts.get(d, 0) + 1
    return counts


def balanced_sample(rng: random.Random, ids: list[str], group: dict[str, str], n: int) -> list[str]:
    """n of `ids`, drawn round-robin over their groups: every group gets an equal share, or all it has."""
    by_group: dict[str, list[str]] = {}
    for i in ids:
        by_group.setdefault(group.get(i, ""), []).append(i)
    for members in by_group.values():
        rng.shuffle(members)
    chosen: list[str] = []
    while len(chosen) < min(n, len(ids)):
        for g in sorted(by_group):
            if by_group[g] and len(chosen) < n:
                chosen.append(by_group[g].pop())
    return sorted(chosen)


def write_dev(records: Iterable[Record], out: str | Path, *, max_queries: int = 400, max_docs: int = 3000,
              seed: int = 42, group: Callable[[Record], str] | None = None) -> dict:
    """A `dev` split of a seeded sample of queries, over their documents plus random others of the same
    source (distractors) up to `max_docs`; with `group` (a document's manual), queries are drawn evenly
    across groups, so the two largest Info manuals do not make half of the set."""
    queries, docs, qrels = collect(records)
    rng = random.Random(seed)
    of = {q: group(docs[min(ds)]) if group else "" for q, ds in qrels.items()}
    chosen = balanced_sample(rng, sorted(qrels), of, max_queries)
    keep = {d for q in chosen for d in qrels[q]}
    others = sorted(set(docs) - keep)
    keep |= set(rng.sample(others, min(len(others), max(max_docs - len(keep), 0))))
    corpus = {d: r for d, r in docs.items() if d in keep}
    rel = {q: qrels[q] for q in chosen}
    write_beir(out, queries, corpus, {"dev": rel})
    return {"dev": stats(queries, corpus, rel)}


# --- `reprank train sources` ----------------------------------------------------------------------------

TRAINING = ("manpages", "pydoc", "sphinx")
DEV = ("perlpod", "info")


def records_for(args) -> Iterator[Record]:
    if args.source == "manpages":
        return manpages(args.root or "/usr/share/man", per_package=args.per_package or 150, seed=args.seed,
                        exclude_packages=dev_packages())
    if args.source == "pydoc":
        return pydoc(args.root, per_package=args.per_package or 300, seed=args.seed)
    if args.source == "sphinx":
        return sphinx(args.root or "/usr/share/doc", per_project=args.per_package or 1500, seed=args.seed,
                      exclude_packages=dev_packages())
    if args.source == "perlpod":
        return perlpod([args.root] if args.root else None)
    return info(args.root or "/usr/share/info")


def run(args) -> int:
    records = records_for(args)
    if args.source in TRAINING:
        result = write_training(records, args.output, heldout=args.heldout, max_queries=args.max_queries,
                                seed=args.seed)
    else:
        by_manual = (lambda r: r.title.split(":")[0]) if args.source == "info" else None
        result = write_dev(records, args.output, max_queries=args.max_queries or 400, max_docs=args.max_docs,
                           seed=args.seed, group=by_manual)
    result = {"source": args.source, "root": args.root, "seed": args.seed} | result
    Path(args.output, "source.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0
