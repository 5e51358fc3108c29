"""The report's index.html: one static page that reads only files beside it (no server,
no CDN, no network request). Everything is readable with JavaScript off; the script
only adds a filter box over the identity galleries."""
from html import escape

__all__ = ["render_page"]

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1240px;padding:0 12px;color:#111}
a{color:#0645ad}:focus-visible{outline:3px solid #e67700;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots img{width:400px;max-width:100%;height:auto}
ul.faces,ul.pairs,ul.index{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:6px}
ul.index li{border:1px solid #ddd;padding:1px 6px;border-radius:3px}
figure{margin:0;text-align:center;font-size:11px}figure img{display:block;margin:auto}
.pair{display:flex;align-items:center;gap:4px;border:1px solid #ddd;padding:3px}
.sim{font-weight:bold;min-width:3.5em;text-align:center}.over{color:#a00}
.kept img{border:2px solid #2b8a3e}.dropped img{border:2px solid #c92a2a}
.missing{width:96px;height:96px;display:flex;align-items:center;justify-content:center;
background:#eee;font-size:11px}
article{border-top:1px solid #aaa;margin-top:12px}.issue{display:flex;gap:12px;flex-wrap:wrap;
border:1px solid #ddd;padding:4px;margin:6px 0}.group{display:flex;gap:4px;align-items:end}
"""

SCRIPT = """
(function () {
  var box = document.getElementById('filterbox'), input = document.getElementById('filter');
  var count = document.getElementById('filtercount');
  if (!box || !input) return;
  box.hidden = false;
  var items = document.querySelectorAll('[data-filter]');
  function apply() {
    var q = input.value.trim().toLowerCase(), shown = 0;
    items.forEach(function (el) {
      var hit = !q || el.getAttribute('data-filter').indexOf(q) >= 0;
      el.hidden = !hit;
      if (hit && el.tagName === 'ARTICLE') shown++;
    });
    count.textContent = shown + ' identities shown';
  }
  input.addEventListener('input', apply);
  apply();
})();
"""


def _face(row, labels, thumbs, role, cls=""):
    """A figure for one face: its thumbnail, or a text tile when it is not in the page."""
    t = thumbs.get(row)
    lab = labels[row]
    if t is None:
        return ('<figure class="%s"><div class="missing">face %d<br>not shown</div>'
                '<figcaption>#%d %s</figcaption></figure>' % (cls, row, row, escape(role)))
    alt = "face %d (label %s), %s" % (t.index, lab, role)
    if t.error:
        alt += ": image %s could not be decoded (%s)" % (t.name, t.error)
    return ('<figure class="%s"><img src="%s" width="%d" height="%d" alt="%s">'
            '<figcaption>#%d %s</figcaption></figure>'
            % (cls, escape(t.file), t.width, t.height, escape(alt), t.index, escape(role)))


def _gallery(g, labels, thumbs, threshold):
    key = ("identity %s %s" % (g.label, " ".join(g.reasons))).lower()
    out = ['<article id="id-%s" data-filter="%s" aria-labelledby="h-%s">'
           % (g.label, escape(key), g.label),
           '<h3 id="h-%s">Identity %s</h3>' % (g.label, escape(str(g.label))),
           '<p>%d faces, %d kept (%.1f%%), %d suppressed; shown as: %s.</p>' % (
               g.n_faces, g.n_kept, 100 * g.n_kept / max(1, g.n_faces), g.n_faces - g.n_kept,
               escape(", ".join(g.reasons)))]
    out.append('<h4>Kept faces (%d of %d shown)</h4><ul class="faces">' % (len(g.kept),
                                                                          g.n_kept))
    out += ['<li>%s</li>' % _face(r, labels, thumbs, "kept", "kept") for r in g.kept]
    out.append('</ul>')
    if g.pairs:
        out.append('<h4>Suppressed faces beside the kept face that suppressed them '
                   '(%d of %d shown)</h4><ul class="pairs">' % (len(g.pairs),
                                                               g.n_faces - g.n_kept))
        for r, by, sim in g.pairs:
            over = threshold is not None and sim > threshold
            s = ('<span class="sim%s" title="cosine similarity">%.3f</span>'
                 % (" over" if over else "", sim)) if by >= 0 else \
                '<span class="sim">no kept face ranked before it</span>'
            out.append('<li class="pair">%s%s%s</li>' % (
                _face(r, labels, thumbs, "suppressed", "dropped"), s,
                _face(by, labels, thumbs, "kept, suppressed it", "kept") if by >= 0 else ""))
        out.append('</ul>')
    out.append('</article>')
    return "\n".join(out)


def _issue(it, labels, thumbs):
    own = "".join(_face(r, labels, thumbs, "typical of %s" % it["label"]) for r in it["own"])
    other = "".join(_face(r, labels, thumbs, "typical of %s" % it["other_label"])
                    for r in it["other"])
    sim = it["other_similarity"]
    return ('<div class="issue"><div class="group">%s</div>'
            '<div><p>face %d, labelled %s, score %s; most like %s (similarity %s)</p>'
            '<div class="group" aria-label="typical faces of its label">%s</div></div>'
            '<div><p>typical of %s</p><div class="group">%s</div></div></div>' % (
                _face(it["index"], labels, thumbs, "flagged", "dropped"), it["index"],
                escape(str(it["label"])), _num(it["score"]), escape(str(it["other_label"])),
                _num(sim), own or "(no other face)", escape(str(it["other_label"])),
                other or "(not known)"))


def _num(v):
    try:
        return "%.3f" % float(v)
    except (TypeError, ValueError):
        return "-"


def _issue_table(issues):
    rows = "".join("<tr><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
        it["index"], escape(str(it["label"])), _num(it["score"]),
        escape(str(it["other_label"])), _num(it["other_similarity"])) for it in issues)
    return ("<table><tr><th>face</th><th>label</th><th>score</th><th>most like</th>"
            "<th>similarity</th></tr>%s</table>" % rows)


def render_page(summary, plots, *, labels, galleries=(), thumbs=None, issues=(),
                threshold=None, sample_note="", notes=(), issues_note=""):
    """The page as a string. summary: [(name, value)]; plots: [(file, description)];
    thumbs: {row: Thumb} of the faces the page shows."""
    thumbs = thumbs or {}
    nav = ['<a href="#summary">Summary</a>', '<a href="#plots">Plots</a>']
    nav += ['<a href="#galleries">Identity galleries</a>'] if galleries else []
    nav += ['<a href="#label-issues">Label issues</a>'] if issues else []
    p = ['<!doctype html>', '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         '<title>facenms selection report</title><style>%s</style></head><body>' % STYLE,
         '<a class="skip" href="#main">Skip to the report</a>',
         '<header><h1>facenms selection report</h1><nav aria-label="sections">%s</nav>'
         '</header><main id="main">' % " | ".join(nav),
         '<section id="summary"><h2>Summary</h2><table>']
    p += ['<tr><th scope="row">%s</th><td>%s</td></tr>' % (escape(k), escape(str(v)))
          for k, v in summary]
    p.append('</table>')
    p += ['<p>%s</p>' % escape(n) for n in notes]
    p.append('</section><section id="plots"><h2>Plots</h2><div class="plots">')
    p += ['<figure><img src="%s" alt="%s"><figcaption>%s</figcaption></figure>'
          % (escape(f), escape(d), escape(d)) for f, d in plots]
    p.append('</div></section>')
    if galleries:
        p += ['<section id="galleries"><h2>Identity galleries</h2>',
              '<p>%s</p>' % escape(sample_note),
              '<div id="filterbox" hidden><label for="filter">Filter identities (label or '
              'reason): </label><input id="filter" type="search" autocomplete="off"> '
              '<span id="filtercount" aria-live="polite"></span></div>',
              '<nav aria-label="identities shown"><ul class="index">']
        p += ['<li data-filter="%s"><a href="#id-%s">%s</a> (%s, %d faces)</li>' % (
            escape(("identity %s %s" % (g.label, " ".join(g.reasons))).lower()), g.label,
            escape(str(g.label)), escape(", ".join(g.reasons)), g.n_faces) for g in galleries]
        p.append('</ul></nav>')
        p += [_gallery(g, labels, thumbs, threshold) for g in galleries]
        p.append('</section>')
    if issues:
        p += ['<section id="label-issues"><h2>Label issues</h2><p>%s</p>' % escape(issues_note)]
        p += [_issue(it, labels, thumbs) for it in issues] if thumbs else [_issue_table(issues)]
        p.append('</section>')
    p.append('</main><script>%s</script></body></html>' % SCRIPT)
    return "\n".join(p)
