"""`reprank train sources`: each builder on a tiny fixture of its format, and the BEIR folders it writes read
back through indexer.corpus (and training.data for the train split)."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from cli import main
from indexer.corpus import read_corpus, read_qrels, read_queries
from training import sources
from training.data import load_train
from training.sources import Record

PROSE = ("The frobnicator reads every widget from the named files, checks each one against the current "
         "configuration, rewrites the broken ones in place and reports what it changed, so that a later run "
         "finds nothing left to do. ")


def test_manpages_from_roff(tmp_path):
    if not shutil.which("man"):
        pytest.skip("man-db is not installed")
    man1, man8 = tmp_path / "man1", tmp_path / "man8"
    man1.mkdir()
    man8.mkdir()
    page = (".TH {name} {section}\n.SH NAME\n{name} \\- {what}\n.SH SYNOPSIS\n.B {name}\n[\\fIfile\\fR]\n"
            ".SH DESCRIPTION\n.B {name}\n{prose}\n.PP\nSee also\n.BR other (1).\n.SH OPTIONS\n.TP\n.B \\-v\nverbose\n")
    (man1 / "frob.1").write_text(page.format(name="frob", section=1, what="frobnicate the widgets", prose=PROSE))
    (man1 / "perlfrob.1").write_text(page.format(name="perlfrob", section=1, what="Perl widgets too", prose=PROSE))
    (man1 / "short.1").write_text(page.format(name="short", section=1, what="too short here", prose="Tiny."))
    (man1 / "alias.1").write_text(".so man1/frob.1\n")
    with gzip.open(man8 / "owned.8.gz", "wt") as f:
        f.write(page.format(name="owned", section=8, what="a page of a dev source", prose=PROSE))
    recs = list(sources.manpages(tmp_path, owners={str(man8 / "owned.8.gz"): "sed"},
                                 exclude_packages=frozenset({"sed"})))
    assert [(r.query, r.title) for r in recs] == [("frobnicate the widgets", "frob(1)")]
    text = recs[0].text
    assert text.startswith("frob The frobnicator reads every widget") and "\n\nSee also other(1)." in text
    assert "verbose" not in text and "SYNOPSIS" not in text  # DESCRIPTION only


def test_pydoc_from_source_files(tmp_path):
    pkg = tmp_path / "widgets"
    (pkg / "tests").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    doc = f'"""Frobnicate all the widgets in a file.\n\n    {PROSE}\n\n    Parameters\n    ----------\n    path : str\n    """'
    (pkg / "core.py").write_text(
        f"def frob(path, *, force=False):\n    {doc}\n\n"
        f"def _private():\n    {doc}\n\n"
        'def tiny():\n    """Too short."""\n\n'
        f"class Frobber:\n    {doc.replace('Frobnicate all', 'Hold all')}\n\n"
        f"    def run(self, n):\n        {doc.replace('Frobnicate all', 'Run over all')}\n")
    (pkg / "tests" / "test_core.py").write_text(f"def test_frob():\n    {doc.replace('Frob', 'Test')}\n")
    recs = list(sources.pydoc(tmp_path))
    assert {r.title: r.query for r in recs} == {  # the same docstring body twice is one document
        "widgets.core.frob(path, force)": "Frobnicate all the widgets in a file"}
    assert recs[0].text.startswith("The frobnicator") and "----" not in recs[0].text
    assert "Frobnicate" not in recs[0].text  # the summary is the query, not part of the document


def test_perlpod(tmp_path):
    (tmp_path / "Widget").mkdir()
    (tmp_path / "Widget" / "Frob.pm").write_text(
        "package Widget::Frob;\nuse strict;\n\n=head1 NAME\nX<frob>\n\nWidget::Frob - frobnicate widgets from Perl\n\n"
        "=head1 SYNOPSIS\n\n  use Widget::Frob;\n\n=head1 DESCRIPTION\n\n"
        f"B<Widget::Frob> works like C<< $w->frob >> on E<lt>fileE<gt>: {PROSE}\n\n    my $code = 1;\n\n"
        "=over 4\n\n=item * L<the manual|perlfunc/open>\n\n=back\n\n=begin html\n\n<p>no</p>\n\n=end html\n\n"
        "=head1 AUTHOR\n\nSomeone\n\n=cut\n\nsub frob { 1 }\n1;\n")
    (tmp_path / "perl5100delta.pod").write_text(f"=head1 NAME\n\nperl5100delta - what is new for perl 5.10.0\n\n"
                                                f"=head1 DESCRIPTION\n\n{PROSE}\n")
    recs = list(sources.perlpod([tmp_path]))
    assert [(r.query, r.title) for r in recs] == [("frobnicate widgets from Perl", "Widget::Frob")]
    assert recs[0].text.startswith("Widget::Frob works like $w->frob on <file>: The frobnicator")
    assert recs[0].text.endswith("\n\nthe manual") and "my $code" not in recs[0].text and "Someone" not in recs[0].text


def _node(manual: str, name: str, body: str) -> str:
    return f"\x1f\nFile: {manual}.info,  Node: {name},  Up: Top\n\n{body}\n"


def test_info(tmp_path):
    nodes = (_node("tiny", "Top", "Tiny\n****\n\n* Menu:\n\n* Frobbing::  How.\n")
             + _node("tiny", "Frobbing", f"1 Frobbing\n=========\n\n{PROSE}*Note Widgets::, for more.\n\n* Menu:\n\n* A::\n")
             + _node("tiny", "Widgets", f"2 Widgets\n=========\n\n{PROSE}")
             + _node("tiny", "Other", f"3 Other\n=======\n\n{PROSE.replace('frobnicator', 'other tool')}")
             + _node("tiny", "Long", "4 Long\n======\n\n" + "".join(f"{i} {PROSE}\n\n" for i in range(10))))
    index = _node("tiny", "Concept Index", "Concept Index\n*************\n\n\x00\x08[index\x00\x08]\n* Menu:\n\n"
                  "* frobbing widgets:                     Frobbing.            (line   6)\n"
                  "* frobbing widgets <1>:                 Widgets.\n                                          (line 3)\n"
                  "* -n:                                   Frobbing.            (line   9)\n"
                  "* the top node:                         Top.                 (line   1)\n"
                  "* long early part:                      Long.                (line   4)\n"
                  "* long late part:                       Long.                (line  21)\n")
    (tmp_path / "tiny.info").write_text(nodes)
    with gzip.open(tmp_path / "tiny.info-1.gz", "wt") as f:
        f.write(index)
    recs = list(sources.info(tmp_path))
    pairs = sorted((r.query, r.title) for r in recs if r.query)
    assert pairs == [("frobbing widgets", "tiny: Frobbing"), ("frobbing widgets", "tiny: Widgets"),
                     ("long early part", "tiny: Long")]  # the late part lies past the clipped document's end
    assert [r.title for r in recs if not r.query] == ["tiny: Other"]  # a distractor; Top is too short
    frobbing = next(r.text for r in recs if r.title == "tiny: Frobbing")
    assert frobbing.startswith("1 Frobbing\n\nThe frobnicator") and "Widgets, for more." in frobbing
    assert "Menu" not in frobbing and "===" not in frobbing

    out = tmp_path / "dev"
    assert main(["train", "sources", "--source", "info", "--root", str(tmp_path), "--output", str(out)]) == 0
    queries, titles = read_queries(out), {d.doc_id: d.title for d in read_corpus(out)}
    assert {queries[q]: sorted(titles[d] for d in ds) for q, ds in read_qrels(out, "dev").items()} == {
        "frobbing widgets": ["tiny: Frobbing", "tiny: Widgets"], "long early part": ["tiny: Long"]}
    assert len(titles) == 4 and not (out / "qrels" / "train.tsv").exists()
    assert json.loads((out / "source.json").read_text())["dev"]["queries"] == 2


def _sphinx_page(*sections: str) -> str:
    return ('<html><head><script>var hidden = "no text here";</script></head><body><div class="body">'
            + "".join(sections) + "</div></body></html>")


def _section(heading: str, body: str, *inner: str, level: int = 2) -> str:
    anchor = heading.lower().replace(" ", "-")
    return (f'<section id="{anchor}"><h{level}>{heading}<a class="headerlink" href="#{anchor}">¶</a></h{level}>'
            f"<p>{body}</p>{''.join(inner)}</section>")


def test_sphinx_headings_to_section_text(tmp_path):
    root = tmp_path.resolve()
    frob = root / "python-frob-doc" / "html"
    frob.mkdir(parents=True)
    (frob / "genindex.html").write_text("<html></html>")
    other = PROSE.replace("frobnicator", "other tool")
    (frob / "guide.html").write_text(_sphinx_page(_section(
        "Frob guide", "Short.",
        _section("Configuring the widgets", PROSE, _section("Nested part here", other, level=3)),
        _section("frob.configure()", PROSE.replace("widget", "gadget")),  # an API name: no query
        _section("Return value", other.replace("files", "pipes")), level=1)))
    (frob / "api.html").write_text(_sphinx_page(_section("Return value", other.replace("files", "sockets"))))
    (root / "python3-frob").mkdir()
    (root / "python3-frob" / "html").symlink_to(frob)  # the same build under another package name
    dev = root / "python-devtool-doc" / "html"
    dev.mkdir(parents=True)
    (dev / "genindex.html").write_text("<html></html>")
    (dev / "guide.html").write_text(_sphinx_page(_section("Configuring the devtool", PROSE)))
    owners = {str(dev / "genindex.html"): "devtool-doc"}

    assert list(sources.sphinx_projects(root, frozenset({"devtool-doc"}), owners)) == ["frob"]
    recs = sorted(sources.sphinx(root, exclude_packages=frozenset({"devtool-doc"}), owners=owners))
    # "Return value" heads two sections of the project (no query); "Frob guide" says too little
    assert [(r.query, r.title) for r in recs] == [("Configuring the widgets", "frob"), ("Nested part here", "frob")]
    widgets = recs[0].text
    assert widgets == " ".join(PROSE.split())  # the heading, its link sign, scripts and the subsection are out
    assert recs[1].text.startswith("The other tool reads")
    assert sorted(r.title for r in sources.sphinx(root, per_project=1, owners=owners)) == ["devtool", "frob"]


def _records(n: int) -> list[Record]:
    return [Record(f"query number {i}", f"document {i} " + PROSE, f"title {i}") for i in range(n)]


def test_training_folder_round_trip(tmp_path):
    out = tmp_path / "set"
    recs = _records(40) + [Record("query number 0", "another document " + PROSE, "dup")]  # a 2nd positive
    result = sources.write_training(recs, out, heldout=3, seed=1)
    train, held = read_qrels(out, "train"), read_qrels(out, "heldout")
    assert len(held) == 3 and len(train) == 37 and not set(train) & set(held)
    assert not (out / "qrels" / "dev.tsv").exists()
    queries = read_queries(out)
    assert set(queries) == set(train) | set(held) and "query number 0" in queries.values()
    corpus = {d.doc_id: d for d in read_corpus(out)}
    assert len(corpus) == 41 and all(d in corpus for rel in (train, held) for ds in rel.values() for d in ds)
    assert sorted(load_train(out).query_ids) == sorted(train)
    small = {d.doc_id for d in read_corpus(out / "heldout")}
    assert read_qrels(out / "heldout", "heldout") == held and len(small) == 30
    assert {d for ds in held.values() for d in ds} <= small and set(read_queries(out / "heldout")) == set(held)
    assert result["train"]["queries"] == 37 and result["documents"] == 41
    again = tmp_path / "again"
    sources.write_training(recs, again, heldout=3, seed=1)  # ids and splits are stable
    assert read_qrels(again, "heldout") == held


def test_dev_sample_is_balanced_and_bounded(tmp_path):
    recs = [r._replace(title=f"big: {r.title}") for r in _records(30)]
    recs += [Record(f"small query {i}", f"small document {i} " + PROSE, f"small: {i}") for i in range(3)]
    recs += [Record(None, f"distractor {i} " + PROSE, "big: x") for i in range(10)]
    result = sources.write_dev(recs, tmp_path, max_queries=8, max_docs=12, seed=3,
                               group=lambda r: r.title.split(":")[0])
    qrels = read_qrels(tmp_path, "dev")
    queries = read_queries(tmp_path)
    assert len(qrels) == 8 and sum(q.startswith("small") for q in queries.values()) == 3  # all 3, not 8 x 3/33
    corpus = {d.doc_id for d in read_corpus(tmp_path)}
    assert len(corpus) == 12 and {d for ds in qrels.values() for d in ds} <= corpus
    assert result["dev"] | {"queries": 8, "documents": 12} == result["dev"]


def test_mix_prefixes_parts_samples_and_leaves_out_excluded_queries(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    sources.write_training(_records(40), a, heldout=3, seed=1)
    sources.write_training(_records(20), b, heldout=2, seed=1)  # the same texts: the same ids as in a
    held_a = tmp_path / "held.tsv"
    train_a = read_qrels(a, "train")
    excluded = sorted(train_a)[:5]
    held_a.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{min(train_a[q])}\t1\n" for q in excluded))
    assert main(["train", "mix", "--part", f"a={a}:10", "--part", f"b={b}", "--exclude", f"a={held_a}",
                 "--output", str(tmp_path / "mix")]) == 0
    mixed = load_train(tmp_path / "mix")
    from_a = [q for q in mixed.query_ids if q.startswith("a:")]
    from_b = [q for q in mixed.query_ids if q.startswith("b:")]
    assert len(from_a) == 10 and len(from_b) == 18  # b: all its train queries
    assert not {f"a:{q}" for q in excluded} & set(from_a)
    assert {q.removeprefix("a:") for q in from_a} <= set(train_a)
    for q in mixed.query_ids:  # each positive is its own part's document, with that document's text
        part, qid = q.split(":", 1)
        src = {d.doc_id: d for d in read_corpus(tmp_path / part)}
        (pos,) = mixed.positives[q]
        assert pos.startswith(part + ":") and mixed.corpus[pos].text == src[pos.split(":", 1)[1]].text
    assert len(mixed.corpus) == 28  # the sampled queries' positives only
    report = json.loads((tmp_path / "mix" / "source.json").read_text())
    assert report["parts"]["a"]["queries"] == 10 and report["parts"]["b"]["sampled"] is None


def test_mix_refuses_unknown_or_repeated_part_names(tmp_path, capsys):
    a = tmp_path / "a"
    sources.write_training(_records(20), a, heldout=2, seed=1)
    held = a / "qrels" / "heldout.tsv"
    assert main(["train", "mix", "--part", f"a={a}", "--exclude", f"c={held}", "--output", str(tmp_path / "x")]) == 2
    assert "names no part: ['c']" in capsys.readouterr().err
    assert main(["train", "mix", "--part", f"a={a}", "--part", f"a={a}", "--output", str(tmp_path / "x")]) == 2
    assert "must differ" in capsys.readouterr().err
    assert main(["train", "mix", "--part", "nopath", "--output", str(tmp_path / "x")]) == 2
    assert "NAME=PATH[:N]" in capsys.readouterr().err
