"""The status page's own stylesheet and script, served from ``/ui/`` (no external asset: the
page's ``Content-Security-Policy`` is ``default-src 'self'``, so no inline style or script
either; widths and colours come from classes, the key-age bar is a native ``<meter>``).

The script only reloads the page every ``data-refresh`` seconds while it is visible and no form
field has the focus; everything works without it.
"""

from __future__ import annotations

CSS = """\
:root{--fg:#1b1f24;--mut:#57606a;--bd:#d0d7de;--bg:#fff;--alt:#f6f8fa;--link:#0550ae;\
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);\
background:var(--bg)}
body{margin:0}
a{color:var(--link)}
:focus-visible{outline:3px solid #0969da;outline-offset:2px}
.skip{position:absolute;left:-999px}
.skip:focus{left:8px;top:8px;background:#fff;padding:4px 8px;z-index:2}
header{display:flex;flex-wrap:wrap;gap:4px 16px;align-items:center;padding:8px 16px;\
background:#24292f;color:#fff}
header a,header .h{color:#fff;font-weight:700;font-size:16px;text-decoration:none}
header span{color:#d0d7de}
header form{margin-left:auto}
main{padding:12px 16px 24px;max-width:1400px}
h1{font-size:20px;margin:4px 0}
h2{font-size:16px;margin:20px 0 6px}
.ok{color:#1a7f37}.bad{color:#b3261e}
.sub,small,.mut{color:var(--mut)}
small{display:block;font-size:12px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
form.f{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin:10px 0}
label{display:flex;flex-direction:column;font-size:12px;color:var(--mut)}
input,select,button{font:inherit;padding:4px 8px;border:1px solid var(--bd);border-radius:6px}
button{background:var(--alt);color:var(--fg);cursor:pointer}
header button{background:#32383f;color:#fff;border-color:#57606a}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:6px 8px;border-bottom:1px solid var(--bd)}
thead th{font-size:12px;color:var(--mut);background:var(--alt);white-space:nowrap}
tbody th{font-weight:600}
tr.a th{border-left:4px solid #b3261e}
.b{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:700;\
border:1px solid}
.stuck{background:#b3261e;color:#fff;border-color:#8c1d18}
.overdue{background:#ffd8a8;color:#5c2c00;border-color:#d4761c}
.failing{background:#ffe1df;color:#8c1d18;border-color:#e5534b}
.rotating{background:#ddf4ff;color:#0a3069;border-color:#54aeff}
.draining{background:#f3e8ff;color:#4c1d95;border-color:#a475f9}
.idle{background:#dafbe1;color:#116329;border-color:#4ac26b}
meter{width:90px;height:10px;vertical-align:middle}
ul.k{margin:0;padding:0;list-style:none}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}
dt{color:var(--mut)}dd{margin:0}
.panel{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:12px}
.box{border:1px solid var(--bd);border-radius:8px;padding:10px 12px}
.todo{border-color:#d4761c;background:#fff8f0;margin:10px 0}
pre{background:var(--alt);padding:8px;border-radius:6px;overflow-x:auto;margin:6px 0}
table.tl td{padding:2px 8px}
table.tl td:last-child{width:160px}
.bar{display:block;height:8px;background:#54aeff;border-radius:2px;width:2px}
.w1{width:16px}.w2{width:32px}.w3{width:48px}.w4{width:64px}.w5{width:80px}
.w6{width:96px}.w7{width:112px}.w8{width:128px}.w9{width:144px}.w10{width:160px}
.vh{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
caption{text-align:left;padding:4px 0}
#t th,#t td,.nw{white-space:nowrap}
#t td:nth-child(2){white-space:normal}
.box h2{margin-top:0}
details{margin:6px 0}
summary{cursor:pointer}
.err{color:#b3261e;font-weight:600}
.login{max-width:360px;margin:40px auto}
.login form{display:flex;flex-direction:column;gap:10px}
.w{overflow-x:auto}
@media (max-width:760px){
main{padding:8px}
#t thead{position:absolute;left:-999px}
#t,#t tbody,#t tr,#t th,#t td{display:block}
#t tr{border:1px solid var(--bd);border-radius:8px;margin:0 0 8px;padding:4px 0}
#t tr.a{border-left:4px solid #b3261e}#t tr.a th{border-left:0}
#t th,#t td{border:0;padding:2px 10px}
#t td::before{display:inline-block;min-width:96px;color:var(--mut);font-size:12px}
#t td:nth-of-type(1)::before{content:"State"}
#t td:nth-of-type(2)::before{content:"Key"}
#t td:nth-of-type(3)::before{content:"Age"}
#t td:nth-of-type(4)::before{content:"Next rotation"}
#t td:nth-of-type(5)::before{content:"Old keys"}
#t td:nth-of-type(6)::before{content:"Last outcome"}
#t td:nth-of-type(7)::before{content:"Destinations"}
#t small{display:inline;margin-left:6px}
#t caption{display:block}
}
"""

JS = """\
// Reload every data-refresh seconds while the page is visible and no form field is in use.
(function () {
  var every = Number(document.body.getAttribute("data-refresh"));
  if (!(every > 0)) return;
  setInterval(function () {
    var active = document.activeElement;
    if (!document.hidden && !(active && active.form)) location.reload();
  }, every * 1000);
})();
"""

__all__ = ["CSS", "JS"]
