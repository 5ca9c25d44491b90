"""The supervisor's commands: ``python -m hall COMMAND --db hall.db ...``, in Chinese.

Each command opens the stand-in server's database through
:class:`~hall.desk.HallDesk` (the server may keep serving meanwhile),
does one thing and prints what it did, in Chinese. Every command has an
English and a Chinese name (``report``/``报表``, ``fix``/``整改``, ...). A
rating is named by its short number of the month (``2026-11-007``, as the
report prints it) or its id. ``--month`` defaults to last month. A refused
command (an unknown rating, a second fix, ...) prints the reason and exits 1;
bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hall import fleet, push, tongbao
from hall.appeals import DECISION_TEXT
from hall.dating import check_month, china_today
from hall.desk import HallDesk
from hall.errors import LedgerError
from hall.export import FORMATS, describe
from hall.fleet import SILENT_AFTER_S as FLEET_SILENT_S
from hall.followup import FollowUp
from hall.report import STATE_TEXT, VERDICT_TEXT, format_report, pending_bad
from hall.report_csv import write_csv
from hall.workdays import load_calendar

PROG = "python -m hall"


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"日期须为 YYYY-MM-DD：{text!r}") from None


def _month(text: str) -> str:
    try:
        return check_month(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"月份须为 YYYY-MM：{text!r}") from None


def last_month(today: datetime.date | None = None) -> str:
    """``YYYY-MM`` of the month before ``today`` (China's today by default): the month a 通报 is about."""
    first = (today or china_today()).replace(day=1)
    return (first - datetime.timedelta(days=1)).strftime("%Y-%m")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="大厅服务器的 SQLite 文件")
    parser.add_argument("--holidays", action="append", default=[], metavar="FILE",
                        help="节假日/调休文件，在内置文件之后读取（可重复）")


def _month_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--month", type=_month, metavar="YYYY-MM", help="月份（默认上个月）")


def _by(parser: argparse.ArgumentParser, help_text: str = "记录人（工号或姓名）") -> None:
    parser.add_argument("--on", type=_date, metavar="YYYY-MM-DD", help="发生日期（默认今天）")
    parser.add_argument("--by", default="", help=help_text)


RATING_HELP = "评价编号（如 2026-11-007），或评价 id（或其唯一开头）"

#: Command -> its Chinese name; either may be typed.
NAMES = {
    "report": "报表", "tongbao": "通报", "export": "导出", "register": "登记", "verify": "查实", "fix": "整改",
    "extend": "延期", "reply": "答复", "appeal": "申诉", "review": "复核", "pending": "待办", "fleet": "设备",
    "push": "推送", "matter": "事项",
}


def _add(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, aliases=[NAMES[name]], help=f"{NAMES[name]}：{help_text}")
    parser.set_defaults(command_name=name)
    _common(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of every supervisor command."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="好差评督办命令。每个命令可用英文或中文名，例如 report 或 报表。",
        epilog="评价可用每月编号指明（如 2026-11-007，报表中列出），也可用 id。月份默认上个月。")
    sub = parser.add_subparsers(dest="command", required=True, metavar="命令")

    p = _add(sub, "report", "月度好差评报表（文本、JSON，或 CSV 文件）")
    _month_arg(p)
    p.add_argument("--as-of", type=_date, metavar="YYYY-MM-DD", help="按此日判断状态（默认今天）")
    p.add_argument("--hall", help="只看此大厅")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--csv", metavar="DIR", help="同时把各表写成 CSV 文件到此目录")

    p = _add(sub, "tongbao", "可打印的月度通报：HTML 页面（含图表）和 PDF")
    _month_arg(p)
    p.add_argument("--as-of", type=_date, metavar="YYYY-MM-DD", help="按此日判断状态（默认今天）")
    p.add_argument("--hall", help="只看此大厅")
    p.add_argument("--out", metavar="DIR", default=".", help="写到此目录（默认当前目录）")
    p.add_argument("--no-pdf", action="store_true", help="只写 HTML，不生成 PDF")

    p = _add(sub, "export", "月度评价数据，供省平台（JSON）")
    _month_arg(p)
    p.add_argument("--format", choices=FORMATS, default="province",
                   help="province：统一接口（satisfaction 5 = 非常满意）；gbt：GB/T 39046（1 = 非常满意）")
    p.add_argument("--hall", help="只看此大厅")
    p.add_argument("--as-of", type=_date, metavar="YYYY-MM-DD", help="此日之后复核的申诉不计")
    p.add_argument("--out", metavar="FILE", help="写到文件而不是标准输出")

    p = _add(sub, "register", "登记设备所在大厅")
    p.add_argument("device", help="设备编号")
    p.add_argument("hall", help="大厅编号（报表和导出按此分组）")
    p.add_argument("--name", help="大厅名称")
    p.add_argument("--area", help="大厅的行政区划代码（导出用）")

    p = _add(sub, "verify", "查实差评：属实（需整改）或不属实（写明理由）")
    p.add_argument("rating", help=RATING_HELP)
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--confirmed", "--属实", dest="verdict", action="store_const", const="confirmed",
                         help="属实：进入整改")
    verdict.add_argument("--invalid", "--不属实", dest="verdict", action="store_const", const="invalid",
                         help="不属实：不再整改，仍计入数字（只有申诉撤销才移出）")
    p.add_argument("--note", required=True, help="查实情况或不属实的理由")
    _by(p)

    p = _add(sub, "fix", "记录差评已整改（须先查实属实）")
    p.add_argument("rating", help=RATING_HELP)
    p.add_argument("--note", required=True, help="整改情况")
    _by(p)

    p = _add(sub, "extend", "延长差评整改期限，写明理由")
    p.add_argument("rating", help=RATING_HELP)
    p.add_argument("--until", required=True, type=_date, metavar="YYYY-MM-DD", help="新的整改期限")
    p.add_argument("--reason", required=True, help="不能按期整改的理由")
    _by(p)

    p = _add(sub, "reply", "记录对群众的答复")
    p.add_argument("rating", help=RATING_HELP)
    p.add_argument("--text", required=True, help="答复内容和方式")
    _by(p)

    p = _add(sub, "appeal", "工作人员对评价提出申诉")
    p.add_argument("rating", help=RATING_HELP)
    p.add_argument("--grounds", required=True, help="申诉理由")
    _by(p, "申诉人（工号或姓名），必填")

    p = _add(sub, "review", "复核申诉：维持评价或撤销评价")
    p.add_argument("appeal", type=int, help="申诉号")
    decision = p.add_mutually_exclusive_group(required=True)
    decision.add_argument("--uphold", "--维持", dest="decision", action="store_const", const="upheld",
                          help="维持评价")
    decision.add_argument("--overturn", "--撤销", dest="decision", action="store_const", const="overturned",
                          help="撤销评价：移出数字（数据保留并标明）")
    p.add_argument("--note", required=True, help="复核意见")
    p.add_argument("--reviewer", required=True, help="复核人")
    p.add_argument("--on", type=_date, metavar="YYYY-MM-DD", help="复核日期（默认今天）")

    p = _add(sub, "pending", "待办：各月未整改差评、待复核申诉")
    p.add_argument("--as-of", type=_date, metavar="YYYY-MM-DD", help="按此日判断（默认今天）")

    p = _add(sub, "fleet", "设备一览：久未联系的在前，其次有积压的")
    p.add_argument("--format", choices=("text", "json", "csv", "html"), default="text")
    p.add_argument("--silent-after", type=float, default=FLEET_SILENT_S / 60, metavar="MINUTES",
                   help=f"超过此分钟数无心跳即为失联（默认 {FLEET_SILENT_S // 60:.0f}）")

    p = _add(sub, "push", "省平台推送队列的状态")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = _add(sub, "matter", "窗口的默认事项（staff_button/free 模式推送时使用）")
    p.add_argument("hall", help="大厅编号")
    p.add_argument("window", help="窗口号")
    p.add_argument("--code", required=True, help="事项编码 taskCode")
    p.add_argument("--name", required=True, help="事项名称 taskName")
    p.add_argument("--dept-code", default="", help="部门编码 deptCode")
    p.add_argument("--channel", default="", help="评价渠道 pf（默认取设备评价中的渠道）")
    return parser


COMMANDS = (*NAMES, *NAMES.values())


def _state_line(ref: str, state: FollowUp) -> str:
    text = f"{ref}：{STATE_TEXT[state.state]}，整改期限 {state.deadline}"
    if state.verified is not None:
        text += f"，查实{VERDICT_TEXT[state.verified.verdict]}"
    if state.fixed is not None:
        text += f"，{state.fixed.on} 已整改"
    if state.days_overdue:
        text += f"，逾期 {state.days_overdue} 天"
    return text


def _report(desk: HallDesk, args: argparse.Namespace) -> None:
    data = desk.report(args.month or last_month(desk.today()), args.as_of, args.hall)
    if args.format == "json":
        print(json.dumps(data, ensure_ascii=False, indent=1))
    else:
        sys.stdout.write(format_report(data))
    if args.csv:
        for path in write_csv(data, Path(args.csv)):
            print(f"已写 {path}", file=sys.stderr)


def _tongbao(desk: HallDesk, args: argparse.Namespace) -> None:
    data = desk.report(args.month or last_month(desk.today()), args.as_of, args.hall)
    html_path, pdf_path = tongbao.write_tongbao(data, Path(args.out), pdf=not args.no_pdf)
    print(f"已写 {html_path}")
    if pdf_path is not None:
        print(f"已写 {pdf_path}")


def _export(desk: HallDesk, args: argparse.Namespace) -> None:
    data = desk.export(args.month or last_month(desk.today()), args.format, args.hall, args.as_of)
    text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"已写 {args.out}：{describe(data)}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _pending(desk: HallDesk, args: argparse.Namespace) -> None:
    as_of = args.as_of or desk.today()
    items = pending_bad(desk.report(as_of.strftime("%Y-%m"), as_of), as_of)
    print(f"未整改差评 {len(items)}（截至 {as_of}）")
    for item in items:
        late = f" 逾期 {item['days_overdue']} 天" if item["days_overdue"] else ""
        print(f"  {item['no'] or item['id']} {item['time']} {item['hall']}/{item['window_no']} {item['level_text']}"
              f" 查实 {item['verdict_text']} 整改期限 {item['deadline']}{late} {item['reply_text']}"
              f"（答复期限 {item['reply_deadline']}） id {item['id']}")
    waiting = [known for appeal in desk.appeals()
               if (known := appeal.as_of(as_of)) is not None and known.decision is None]
    print(f"待复核申诉 {len(waiting)}")
    for appeal in waiting:
        print(f"  #{appeal.n} {appeal.filed_on} {appeal.filed_by}：{appeal.grounds} 评价 {appeal.rating_id}")


def _fleet(desk: HallDesk, args: argparse.Namespace) -> None:
    rows = desk.fleet(silent_after_s=args.silent_after * 60)
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    elif args.format == "csv":
        sys.stdout.write(fleet.fleet_csv(rows))
    elif args.format == "html":
        sys.stdout.write(fleet.render_html(rows))
    else:
        sys.stdout.write(fleet.format_fleet(rows))


def _push(desk: HallDesk, args: argparse.Namespace) -> None:
    status = push.queue_status(desk.connection())
    if args.format == "json":
        print(json.dumps(status, ensure_ascii=False, indent=1))
        return
    print(f"省平台推送：待发 {status['pending']}  已发 {status['sent']}  最早待发 {status['oldest_pending'] or '-'}")
    if status["last_error"]:
        print(f"  最近错误：{status['last_error']}")


def _run(desk: HallDesk, args: argparse.Namespace) -> None:
    command = args.command_name
    simple: dict[str, Callable[[HallDesk, argparse.Namespace], None]] = {
        "report": _report, "tongbao": _tongbao, "export": _export, "pending": _pending, "fleet": _fleet,
        "push": _push}
    if command in simple:
        simple[command](desk, args)
    elif command == "register":
        desk.register(args.device, args.hall, args.name, args.area)
        print(f"{args.device} 已登记到大厅 {args.hall}")
    elif command == "matter":
        push.set_matter(desk.connection(), args.hall, args.window, args.code, args.name, args.dept_code,
                        args.channel)
        print(f"{args.hall}/{args.window} 默认事项：{args.code} {args.name}")
    elif command == "verify":
        print(_state_line(args.rating, desk.verify(args.rating, args.verdict, args.note, args.on, args.by)))
    elif command == "fix":
        print(_state_line(args.rating, desk.record_fix(args.rating, args.note, args.on, args.by)))
    elif command == "extend":
        print(_state_line(args.rating, desk.extend(args.rating, args.until, args.reason, args.on, args.by)))
    elif command == "reply":
        print(_state_line(args.rating, desk.reply(args.rating, args.text, args.on, args.by)))
    elif command == "appeal":
        print(f"申诉 #{desk.file_appeal(args.rating, args.grounds, args.by, args.on).n} 已提出")
    elif command == "review":
        appeal = desk.decide_appeal(args.appeal, args.decision, args.reviewer, args.note, args.on)
        print(f"申诉 #{appeal.n}：{DECISION_TEXT[appeal.decision]}")


def main(argv: Sequence[str]) -> int:
    """Run one supervisor command.

    Returns:
        0 when done, 1 when the records refused it; argument errors exit 2 through argparse.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        calendar = load_calendar(*args.holidays)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    try:
        with HallDesk(args.db, calendar) as desk:
            _run(desk, args)
    except (LedgerError, tongbao.RenderError) as exc:
        print(f"{PROG} {args.command}：{exc}", file=sys.stderr)
        return 1
    return 0
