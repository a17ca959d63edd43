"""A single self-contained HTML page of the telemetry: no network needed to open it.

The report's numbers are embedded as JSON; a small inline script draws the charts as
SVG (no library, no CDN): calls per task, tokens per model, cost per key tier, and
what the free keys saved, over time, plus summary tables. When the script finishes
it sets ``data-render="ok"`` and ``data-charts="<n>"`` on ``<body>``; a script error
sets ``data-render="error"`` and lists the messages in ``#render-errors`` (the
headless-browser test reads those).

Texts that come from the data (task names...) are inserted with ``textContent`` only,
and the JSON is escaped for ``<script>``, so a task named ``</script>`` stays a name;
task names longer than :data:`~.safe_text.LABEL_MAX_CHARS` are cut.
"""

from __future__ import annotations

import html
import json
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from .._version import __version__
from .safe_text import cut_label
from .views import auto_group

__all__ = ["build_report_data", "render_html", "write_html_report"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def build_report_data(
    telemetry: Any, period: str = "month", group: str | None = None, budgets: Any = None
) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data.

    ``telemetry`` is a :class:`~.telemetry_report.Telemetry`; ``group`` the time bucket
    (default: chosen from the period's length); ``budgets`` the rules whose state the
    page shows (default ``CSCTRACKER_AI_BUDGETS``; none: the section says so).
    """
    resolved = telemetry.period(period)
    bucket = group or auto_group(resolved)
    summary = [dict(r, task=cut_label(r.get("task"))) for r in telemetry.get_telemetry_data("group", period)]
    by_task = [dict(r, series=cut_label(r.get("series"))) for r in telemetry.timeseries(period, bucket, "task")]
    data: dict[str, Any] = _jsonable(
        {
            "title": "csctracker-ai-core: uso e custo do Gemini",
            "period": period,
            "start": resolved.start if resolved.name != "max" else None,
            "end": resolved.end if resolved.name != "max" else None,
            "group": bucket,
            "generated_at": datetime.now(timezone.utc).replace(microsecond=0),
            "version": __version__,
            "by_task": by_task,
            "by_model": telemetry.timeseries(period, bucket, "model"),
            "by_tier": telemetry.timeseries(period, bucket, "tier"),
            "summary": summary,
            "models": telemetry.usage_by("model", period),
            "keys": telemetry.usage_by("key", period),
            "budgets": [line.as_dict() for line in telemetry.get_budget_status(budgets)],
            "waste": telemetry.waste(period),
            "served_tiers": telemetry.cost_by_served_tier(period),
        }
    )
    return data


def _script_json(data: dict[str, Any]) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    # Inside <script>, only "</" and the HTML comment openers can end or confuse it.
    return (
        text.replace("</", "<\\/").replace("<!--", "<\\!--").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


def render_html(data: dict[str, Any]) -> str:
    """The page for ``data`` (as made by :func:`build_report_data`). Pure."""
    title = html.escape(str(data.get("title", "csctracker-ai-core report")))
    return _TEMPLATE.replace("@@TITLE@@", title).replace("@@DATA@@", _script_json(data))


def write_html_report(
    telemetry: Any, path: str | Path, period: str = "month", group: str | None = None, budgets: Any = None
) -> Path:
    """Build the report for ``period`` and write it to ``path`` (UTF-8). Returns the path."""
    target = Path(path)
    page = render_html(build_report_data(telemetry, period, group, budgets))
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="pt-BR">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>
  :root { --fg:#1f2430; --muted:#6b7280; --line:#e5e7eb; --bg:#fafafa; --card:#fff; }
  * { box-sizing: border-box; }
  body { margin:0; padding:24px; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
         color:var(--fg); background:var(--bg); }
  h1 { font-size:22px; margin:0 0 4px; }
  h2 { font-size:16px; margin:0 0 8px; }
  .sub { color:var(--muted); margin-bottom:20px; }
  .cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(170px,1fr)); gap:12px; margin-bottom:20px; }
  .card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
  .card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
  .card .v { font-size:20px; font-weight:600; margin-top:2px; }
  .card.saving .v { color:#15803d; }
  .grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(460px,1fr)); gap:16px; }
  .panel { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px; overflow:hidden; }
  svg.chart { width:100%; height:auto; display:block; }
  svg.chart text { font-size:11px; fill:var(--muted); }
  .legend { display:flex; flex-wrap:wrap; gap:6px 14px; margin-top:6px; font-size:12px; }
  .legend span.sw { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
  table { border-collapse:collapse; width:100%; font-size:12.5px; }
  th, td { text-align:right; padding:5px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th:first-child, td:first-child { text-align:left; }
  th { color:var(--muted); font-weight:600; }
  .tables { margin-top:16px; display:grid; gap:16px; }
  .empty { color:var(--muted); padding:30px 0; text-align:center; }
  #render-errors { color:#b91c1c; white-space:pre-wrap; }
  footer { color:var(--muted); margin-top:20px; font-size:12px; }
</style>
</head>
<body data-render="pending" data-charts="0">
<h1>@@TITLE@@</h1>
<div class="sub" id="subtitle"></div>
<noscript><p>Os gráficos precisam de JavaScript (embutido nesta página, sem rede).</p></noscript>
<div class="cards" id="cards"></div>
<div class="grid">
  <div class="panel"><h2>Chamadas por tarefa</h2><div id="chart-calls"></div></div>
  <div class="panel"><h2>Tokens por modelo</h2><div id="chart-tokens"></div></div>
  <div class="panel"><h2>Custo de tabela (USD) por tier da chave</h2><div id="chart-cost"></div></div>
  <div class="panel"><h2>Economia das chaves gratuitas (USD)</h2><div id="chart-saving"></div></div>
</div>
<div class="tables">
  <div class="panel"><h2>Orçamentos (período corrente de cada regra)</h2><div id="table-budgets"></div></div>
  <div class="panel"><h2>Por tarefa</h2><div id="table-tasks"></div></div>
  <div class="panel"><h2>Por modelo</h2><div id="table-models"></div></div>
  <div class="panel"><h2>Por chave (fingerprint)</h2><div id="table-keys"></div></div>
  <div class="panel"><h2>Desperdício: tentativas que não produziram o resultado</h2><div id="table-waste"></div></div>
  <div class="panel"><h2>Custo por nível de serviço cobrado</h2><div id="table-tiers"></div></div>
</div>
<div id="render-errors"></div>
<footer id="footer"></footer>
<script id="report-data" type="application/json">@@DATA@@</script>
<script>
(function () {
  "use strict";
  var errors = [];
  function fail(msg) {
    errors.push(String(msg));
    document.body.setAttribute("data-render", "error");
    document.getElementById("render-errors").textContent = errors.join("\n");
  }
  window.addEventListener("error", function (e) { fail(e.message || e); });

  var NS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#2563eb","#16a34a","#f59e0b","#dc2626","#7c3aed","#0891b2","#db2777","#65a30d","#ea580c","#475569"];
  var TIER_COLORS = { free: "#16a34a", paid: "#2563eb", "": "#94a3b8" };

  function el(tag, attrs, text) {
    var n = document.createElementNS(NS, tag);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) n.setAttribute(k, attrs[k]); }
    if (text !== undefined) n.textContent = text;
    return n;
  }
  function h(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  }
  function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }
  function fmtInt(v) { return Math.round(num(v)).toLocaleString("pt-BR"); }
  function fmtMoney(v, cur) {
    if (v === null || v === undefined) return "—";
    var x = num(v), a = Math.abs(x);
    var digits = a === 0 ? 2 : a < 0.01 ? 6 : a < 1 ? 4 : 2;
    return (cur || "US$") + " " + x.toLocaleString("pt-BR", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  function fmtShort(v) {
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    if (a > 0 && a < 0.001) return v.toExponential(1);
    return String(Number(v.toPrecision(3)));
  }
  // Short axis labels: 2025-06-14 -> 14/06, 2025-06-14 09:00 -> 14/06 09h, ... 09:05 -> 09:05
  function shortLabel(b) {
    var m;
    if ((m = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):00$/.exec(b))) return m[3] + "/" + m[2] + " " + m[4] + "h";
    if ((m = /^\d{4}-\d{2}-\d{2} (\d{2}:\d{2})$/.exec(b))) return m[1];
    if ((m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(b))) return m[3] + "/" + m[2];
    return b;
  }
  function niceMax(v) {
    if (v <= 0) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  // rows: [{bucket, series, <field>}] -> stacked bars, one bar per bucket
  function stackedBars(target, rows, field, colorOf, formatter) {
    var box = document.getElementById(target);
    var buckets = [], seriesNames = [], table = {};
    rows.forEach(function (r) {
      if (buckets.indexOf(r.bucket) < 0) buckets.push(r.bucket);
      var s = r.series === "" ? "(sem nome)" : r.series;
      if (seriesNames.indexOf(s) < 0) seriesNames.push(s);
      table[r.bucket + "\u0000" + s] = num(r[field]);
    });
    buckets.sort();
    if (!buckets.length) { box.appendChild(h("div", "empty", "Sem dados no período.")); return 0; }
    var W = 640, H = 260, L = 56, R = 10, T = 10, B = 46;
    var totals = buckets.map(function (b) {
      return seriesNames.reduce(function (acc, s) { return acc + (table[b + "\u0000" + s] || 0); }, 0);
    });
    var top = niceMax(Math.max.apply(null, totals));
    var svg = el("svg", { "class": "chart", viewBox: "0 0 " + W + " " + H, role: "img", "data-series": seriesNames.length });
    for (var i = 0; i <= 4; i++) {
      var y = T + (H - T - B) * (1 - i / 4);
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#e5e7eb" }));
      svg.appendChild(el("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, fmtShort(top * i / 4)));
    }
    var slot = (W - L - R) / buckets.length, bw = Math.max(2, Math.min(48, slot * 0.7));
    var every = Math.max(1, Math.ceil(buckets.length / Math.floor((W - L - R) / 64)));  // ~64px per label
    buckets.forEach(function (b, bi) {
      var x = L + slot * bi + (slot - bw) / 2, acc = 0;
      seriesNames.forEach(function (s, si) {
        var v = table[b + "\u0000" + s] || 0;
        if (v <= 0) return;
        var y0 = T + (H - T - B) * (1 - acc / top), y1 = T + (H - T - B) * (1 - (acc + v) / top);
        var rect = el("rect", { x: x, y: y1, width: bw, height: Math.max(0.5, y0 - y1), fill: colorOf(s, si), "class": "bar" });
        rect.appendChild(el("title", {}, b + " · " + s + ": " + formatter(v)));
        svg.appendChild(rect);
        acc += v;
      });
      if (bi % every === 0) {
        var label = shortLabel(b);
        svg.appendChild(el("text", { x: x + bw / 2, y: H - B + 16, "text-anchor": "middle" }, label));
      }
    });
    svg.appendChild(el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#9ca3af" }));
    box.appendChild(svg);
    var legend = h("div", "legend");
    seriesNames.forEach(function (s, si) {
      var item = h("span"), sw = h("span", "sw");
      sw.style.background = colorOf(s, si);
      item.appendChild(sw); item.appendChild(document.createTextNode(s));
      legend.appendChild(item);
    });
    box.appendChild(legend);
    return 1;
  }

  function savingRows(rows) {
    var byBucket = {};
    rows.forEach(function (r) {
      var o = byBucket[r.bucket] || (byBucket[r.bucket] = { pago: 0, economia: 0 });
      o.pago += num(r.custo_usd); o.economia += num(r.economia_usd);
    });
    var out = [];
    Object.keys(byBucket).forEach(function (b) {
      out.push({ bucket: b, series: "custo pago", v: byBucket[b].pago });
      out.push({ bucket: b, series: "economia (chaves gratuitas)", v: byBucket[b].economia });
    });
    return out;
  }

  function tableOf(target, rows, columns) {
    var box = document.getElementById(target);
    if (!rows.length) { box.appendChild(h("div", "empty", "Sem dados no período.")); return; }
    var t = h("table"), head = h("tr");
    columns.forEach(function (c) { head.appendChild(h("th", "", c[0])); });
    t.appendChild(head);
    rows.forEach(function (r) {
      var tr = h("tr");
      columns.forEach(function (c) { tr.appendChild(h("td", "", c[1](r))); });
      t.appendChild(tr);
    });
    box.appendChild(t);
  }

  function card(label, value, cls) {
    var c = h("div", "card" + (cls ? " " + cls : ""));
    c.appendChild(h("div", "k", label)); c.appendChild(h("div", "v", value));
    document.getElementById("cards").appendChild(c);
  }

  try {
    var data = JSON.parse(document.getElementById("report-data").textContent);
    var sub = "Período: " + data.period + (data.start ? " (" + data.start + " → " + data.end + ")" : "") +
              " · agrupado por " + data.group + " · UTC";
    document.getElementById("subtitle").textContent = sub;
    var tot = { ev: 0, tok: 0, usd: 0, lista: 0, eco: 0, brl: 0, brlOk: true, free: 0, err: 0 };
    data.summary.forEach(function (r) {
      tot.ev += num(r.total_events); tot.tok += num(r.total_input_tokens) + num(r.total_output_tokens);
      tot.usd += num(r.custo_total_usd); tot.lista += num(r.custo_lista_usd); tot.eco += num(r.economia_usd);
      tot.free += num(r.free_events); tot.err += num(r.errors);
      if (r.custo_total_reais === null) tot.brlOk = false; else tot.brl += num(r.custo_total_reais);
    });
    card("Chamadas", fmtInt(tot.ev));
    card("Gratuitas", fmtInt(tot.free));
    card("Erros", fmtInt(tot.err));
    card("Tokens (entrada + saída)", fmtInt(tot.tok));
    card("Custo", fmtMoney(tot.usd));
    card("Custo (R$)", tot.brlOk ? fmtMoney(tot.brl, "R$") : "sem câmbio");
    card("Custo de tabela", fmtMoney(tot.lista));
    card("Economia", fmtMoney(tot.eco), "saving");

    var charts = 0;
    var palette = function (s, i) { return PALETTE[i % PALETTE.length]; };
    charts += stackedBars("chart-calls", data.by_task, "calls", palette, fmtInt);
    charts += stackedBars("chart-tokens", data.by_model, "tokens", palette, fmtInt);
    charts += stackedBars("chart-cost", data.by_tier, "custo_lista_usd",
      function (s, i) { return TIER_COLORS[s] || PALETTE[i % PALETTE.length]; }, function (v) { return fmtMoney(v); });
    charts += stackedBars("chart-saving", savingRows(data.by_tier), "v",
      function (s) { return s === "custo pago" ? "#2563eb" : "#16a34a"; }, function (v) { return fmtMoney(v); });

    var budgets = data.budgets || [];
    if (!budgets.length) {
      document.getElementById("table-budgets").appendChild(
        h("div", "empty", "Nenhum orçamento configurado (CSCTRACKER_AI_BUDGETS)."));
    } else {
      var cur = function (r, v) { return fmtMoney(v, r.currency === "BRL" ? "R$" : undefined); };
      tableOf("table-budgets", budgets, [
        ["regra", function (r) { return r.rule; }],
        ["período", function (r) { return r.period_key; }],
        ["gasto", function (r) { return cur(r, r.spent); }],
        ["reservado", function (r) { return cur(r, r.reserved); }],
        ["limite", function (r) { return cur(r, r.limit); }],
        ["restante", function (r) { return cur(r, r.remaining); }],
        ["uso", function (r) { return num(r.used_pct).toFixed(1) + "%"; }],
        ["renova em", function (r) { return r.resets_at; }]
      ]);
    }
    tableOf("table-tasks", data.summary, [
      ["tarefa", function (r) { return r.task; }],
      ["chamadas", function (r) { return fmtInt(r.total_events); }],
      ["gratuitas", function (r) { return fmtInt(r.free_events); }],
      ["erros", function (r) { return fmtInt(r.errors); }],
      ["tokens entrada", function (r) { return fmtInt(r.total_input_tokens); }],
      ["tokens saída", function (r) { return fmtInt(r.total_output_tokens); }],
      ["custo", function (r) { return fmtMoney(r.custo_total_usd); }],
      ["custo R$", function (r) { return r.custo_total_reais === null ? "sem câmbio" : fmtMoney(r.custo_total_reais, "R$"); }],
      ["economia", function (r) { return fmtMoney(r.economia_usd); }],
      ["p50 ms", function (r) { return r.latencia_p50_ms === null ? "—" : fmtInt(r.latencia_p50_ms); }],
      ["p95 ms", function (r) { return r.latencia_p95_ms === null ? "—" : fmtInt(r.latencia_p95_ms); }]
    ]);
    tableOf("table-models", data.models, [
      ["modelo", function (r) { return r.model_name || "(nenhum)"; }],
      ["chamadas", function (r) { return fmtInt(r.calls); }],
      ["erros", function (r) { return fmtInt(r.errors); }],
      ["429", function (r) { return fmtInt(r.http_429); }],
      ["tokens", function (r) { return fmtInt(r.tokens_total); }],
      ["custo", function (r) { return fmtMoney(r.custo_usd); }],
      ["economia", function (r) { return fmtMoney(r.economia_usd); }]
    ]);
    tableOf("table-keys", data.keys, [
      ["chave", function (r) { return r.key_fingerprint || "(nenhuma)"; }],
      ["chamadas", function (r) { return fmtInt(r.calls); }],
      ["gratuitas", function (r) { return fmtInt(r.free_events); }],
      ["erros", function (r) { return fmtInt(r.errors); }],
      ["429 por cota", function (r) {
        var q = r.quota_429 || {}, parts = [];
        Object.keys(q).sort().forEach(function (k) { parts.push(k + ": " + q[k]); });
        return parts.length ? parts.join(", ") : "0";
      }],
      ["tokens", function (r) { return fmtInt(r.tokens_total); }],
      ["custo", function (r) { return fmtMoney(r.custo_usd); }]
    ]);
    tableOf("table-waste", data.waste, [
      ["tarefa", function (r) { return r.task; }],
      ["modelo", function (r) { return r.model_name || "(nenhum)"; }],
      ["falha", function (r) { return r.failure; }],
      ["tentativas", function (r) { return fmtInt(r.attempts); }],
      ["tokens entrada", function (r) { return fmtInt(r.tokens_input); }],
      ["tokens saída", function (r) { return fmtInt(r.tokens_output); }],
      ["custo", function (r) { return fmtMoney(r.custo_usd); }],
      ["custo de tabela", function (r) { return fmtMoney(r.custo_lista_usd); }]
    ]);
    tableOf("table-tiers", data.served_tiers, [
      ["nível", function (r) { return r.service_tier; }],
      ["requisições", function (r) { return fmtInt(r.requests); }],
      ["tokens entrada", function (r) { return fmtInt(r.tokens_input); }],
      ["tokens saída", function (r) { return fmtInt(r.tokens_output); }],
      ["custo", function (r) { return fmtMoney(r.custo_usd); }],
      ["custo de tabela", function (r) { return fmtMoney(r.custo_lista_usd); }]
    ]);
    document.getElementById("footer").textContent =
      "Gerado em " + data.generated_at + " por csctracker-ai-core " + data.version +
      ". Custos registrados em cada tentativa, pelos preços em vigor no instante da chamada " +
      "(csc-ai reprice recalcula); chamadas em chaves gratuitas custam 0.";
    document.body.setAttribute("data-charts", String(charts));
    if (!errors.length) document.body.setAttribute("data-render", "ok");
  } catch (e) {
    fail(e && e.stack ? e.stack : e);
  }
})();
</script>
</body>
</html>
"""
