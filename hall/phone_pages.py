"""The phone page's HTML (hall/phone.py): server-rendered, Chinese, made for a phone's browser, no script.

The five levels are radio buttons; each level's reason tags show under it once it is chosen (CSS only,
``:checked ~ .tags``), and only the chosen level's tags are read from the form.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hall.levels import LEVEL_TEXT, LEVELS
from hall.push import RATE_WITHIN_WORKING_DAYS

if TYPE_CHECKING:
    from hall.phone import Service

#: The longest comment kept, in characters.
MAX_COMMENT = 500

_STYLE = """
body{font-family:"PingFang SC","Noto Sans CJK SC","WenQuanYi Zen Hei",sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#c8161d;color:#fff;padding:14px 16px;font-size:18px;font-weight:bold}
main{padding:12px 14px 40px;max-width:560px;margin:auto}
.card{background:#fff;border-radius:8px;padding:12px 14px;margin:10px 0}
.facts{font-size:14px;color:#555;line-height:1.7}
h1{font-size:20px;margin:6px 0 10px}
.level{display:block;border:1px solid #ddd;border-radius:6px;margin:8px 0;padding:10px}
.level>label{font-size:17px}
.tags{display:none;margin:8px 0 0 26px}
.level input[name=level]:checked~.tags{display:block}
.tag{display:block;margin:6px 0;font-size:15px}
textarea{width:100%;box-sizing:border-box;min-height:90px;font-size:16px}
button{width:100%;font-size:18px;padding:12px;background:#c8161d;color:#fff;border:0;border-radius:6px}
.error{color:#c8161d;font-weight:bold}
.note{font-size:13px;color:#777}
input[type=radio],input[type=checkbox]{transform:scale(1.3);margin-right:8px}
"""


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<header>政务服务“好差评”</header><main>{body}</main></body></html>")


def _facts(service: Service | None) -> str:
    if service is None:
        return ""
    event = service.event
    lines = [f"窗口：{html.escape(str(event.get('window_no') or '—'))}"]
    if event.get("staff_name") or event.get("staff_no"):
        lines.append(f"工作人员：{html.escape(str(event.get('staff_name') or ''))} "
                     f"{html.escape(str(event.get('staff_no') or ''))}")
    if event.get("task_name"):
        lines.append(f"事项：{html.escape(str(event['task_name']))}")
    if service.when is not None:
        lines.append(f"服务时间：{service.when:%Y年%m月%d日 %H:%M}")
    return f"<div class=\"card facts\" id=\"service\">{'<br>'.join(lines)}</div>"


def _error(error: str) -> str:
    return f"<p class=\"error\" id=\"error\">{html.escape(error)}</p>" if error else ""


def _public_choice() -> str:
    return ("<div class=\"card\"><div>是否公开本次评价（可不选择公开评价）</div>"
            "<label class=\"tag\"><input type=\"radio\" name=\"public\" value=\"1\" id=\"public-yes\" checked>"
            "公开评价</label>"
            "<label class=\"tag\"><input type=\"radio\" name=\"public\" value=\"0\" id=\"public-no\">不公开</label>"
            "<div class=\"note\">不公开时，评价仍计入统计并报送，但不对外展示内容。</div></div>")


def _comment() -> str:
    return (f"<div class=\"card\"><label for=\"comment\">意见或建议（选填，{MAX_COMMENT}字以内）</label>"
            f"<textarea name=\"comment\" id=\"comment\" maxlength=\"{MAX_COMMENT}\"></textarea></div>")


def render_rate(service: Service, tags: Sequence[Mapping[str, Any]], error: str = "") -> str:
    """The rating form: five levels, each with its reason tags, a comment, public or not."""
    levels = []
    for level in LEVELS:
        own = [tag for tag in tags if tag.get("level") == level]
        boxes = "".join(
            f"<label class=\"tag\"><input type=\"checkbox\" name=\"reason_{level}\" "
            f"value=\"{html.escape(str(tag['code']))}\" id=\"reason-{html.escape(str(tag['code']))}\">"
            f"{html.escape(str(tag.get('text') or tag['code']))}</label>" for tag in own)
        tags_html = f"<div class=\"tags\">原因（可多选）：{boxes}</div>" if own else ""
        levels.append(f"<div class=\"level\"><input type=\"radio\" name=\"level\" value=\"{level}\" "
                      f"id=\"level-{level}\" required><label for=\"level-{level}\">{LEVEL_TEXT[level]}</label>"
                      f"{tags_html}</div>")
    last = f"{service.last_day:%Y年%m月%d日}" if service.last_day else ""
    body = (f"<h1>请对本次服务进行评价</h1>{_facts(service)}{_error(error)}"
            f"<p class=\"note\">服务后 {RATE_WITHIN_WORKING_DAYS} 个工作日内可评价（截至 {last}）。"
            "每次服务只能评价一次。</p>"
            "<form method=\"post\" id=\"rate\"><input type=\"hidden\" name=\"kind\" value=\"rating\">"
            f"<div class=\"card\">{''.join(levels)}</div>{_comment()}{_public_choice()}"
            "<button type=\"submit\" id=\"submit\">提交评价</button></form>")
    return _page("服务评价", body)


def render_followup(service: Service, tags: Sequence[Mapping[str, Any]], error: str = "") -> str:
    """The 追评 form: reasons and a comment; the rating itself is never shown or changed here."""
    seen: set[str] = set()
    boxes = []
    for tag in tags:
        code = str(tag["code"])
        if code in seen:
            continue
        seen.add(code)
        boxes.append(f"<label class=\"tag\"><input type=\"checkbox\" name=\"reason\" value=\"{html.escape(code)}\" "
                     f"id=\"reason-{html.escape(code)}\">{html.escape(str(tag.get('text') or code))}</label>")
    reasons = f"<div class=\"card\">具体原因（可多选）：{''.join(boxes)}</div>" if boxes else ""
    body = (f"<h1>追加评价</h1>{_facts(service)}{_error(error)}"
            "<p id=\"rated\">本次服务已经评价过，不能再次评价；您可以补充具体原因和意见（追评）。</p>"
            "<form method=\"post\" id=\"followup\"><input type=\"hidden\" name=\"kind\" value=\"followup\">"
            f"{reasons}{_comment()}{_public_choice()}"
            "<button type=\"submit\" id=\"submit\">提交追评</button></form>")
    return _page("追加评价", body)


def render_thanks(record: Mapping[str, Any], service: Service | None) -> str:
    """After a rating or 追评 is stored."""
    what = "评价" if record.get("type") == "rating" else "追评"
    shown = "公开" if record.get("public") else "不公开"
    body = (f"<h1 id=\"thanks\">感谢您的{what}</h1>{_facts(service)}"
            f"<div class=\"card\">您的{what}已提交（{shown}）。</div>")
    return _page("感谢您的评价", body)


def render_message(title: str, text: str, service: Service | None = None, error: str = "") -> str:
    """A page that only says something (closed, done, not yet dated, refused)."""
    body = f"<h1 id=\"title\">{html.escape(title)}</h1>{_facts(service)}{_error(error)}" \
           f"<div class=\"card\" id=\"message\">{html.escape(text)}</div>"
    return _page(title, body)


def render_unknown() -> str:
    """A code the hall holds no service for: refused, never a form."""
    return render_message(
        "未找到该次服务",
        "未找到该次服务，本页面不能评价。链接可能不完整或被改动；如果您刚刚办完业务，评价器可能尚未上传，"
        "请稍后再扫码或打开短信中的链接。")


def render_window() -> str:
    """The window's own code: no service is known, so no rating is taken here."""
    text = ("这是窗口的二维码，不对应某一次具体服务，因此在这里不能评价。"
            "请在办理完毕时按窗口评价器上的按键评价；如未当场评价，请扫描评价器在服务结束后显示的本次服务二维码，"
            f"或打开短信中的链接，在服务后 {RATE_WITHIN_WORKING_DAYS} 个工作日内评价，可选择不公开。")
    return render_message("窗口评价说明", text)
