"""The supervisor's commands: ``python -m sim.hall COMMAND --db hall.db ...``.

Each command opens the stand-in server's database through
:class:`~sim.hall.desk.HallDesk` (the server may keep serving meanwhile),
does one thing and prints what it did. A refused command (an unknown rating,
a second fix, ...) prints the reason and exits 1; bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sim.hall.dating import check_month, china_today
from sim.hall.desk import HallDesk
from sim.hall.errors import LedgerError
from sim.hall.export import FORMATS, describe
from sim.hall.followup import FollowUp
from sim.hall.report import STATE_TEXT, format_report
from sim.hall.report_csv import write_csv
from sim.hall.workdays import load_calendar

PROG = "python -m sim.hall"


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _month(text: str) -> str:
    try:
        return check_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="the stand-in server's SQLite file")
    parser.add_argument("--holidays", action="append", default=[], metavar="FILE",
                        help="a holidays/workdays file read after the shipped one (may repeat)")


def _by(parser: argparse.ArgumentParser, help_text: str = "who records it (工号 or name)") -> None:
    parser.add_argument("--on", type=_date, metavar="YYYY-MM-DD", help="the day it happened (default today)")
    parser.add_argument("--by", default="", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every supervisor command."""
    parser = argparse.ArgumentParser(prog=PROG, description="The hall supervisor's commands.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("report", help="the month's 好差评 report (text, JSON or CSV files)")
    _common(p)
    p.add_argument("--month", required=True, type=_month, metavar="YYYY-MM")
    p.add_argument("--as-of", type=_date, metavar="YYYY-MM-DD", help="judge states on this day (default today)")
    p.add_argument("--hall", help="this hall only")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--csv", metavar="DIR", help="also write the report's tables as CSV files here")

    p = sub.add_parser("export", help="the month's ratings for the provincial platform (JSON)")
    _common(p)
    p.add_argument("--month", required=True, type=_month, metavar="YYYY-MM")
    p.add_argument("--format", choices=FORMATS, default="province",
                   help="province: the unified interface (satisfaction 5 = 非常满意); gbt: GB/T 39046 (1 = 非常满意)")
    p.add_argument("--hall", help="this hall only")
    p.add_argument("--as-of", type=_date, metavar="YYYY-MM-DD", help="appeals decided after this day are ignored")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")

    p = sub.add_parser("register", help="register a device as installed in a hall")
    _common(p)
    p.add_argument("device", help="device id")
    p.add_argument("hall", help="hall id (what reports and exports group by)")
    p.add_argument("--name", help="the hall's name")
    p.add_argument("--area", help="the hall's 行政区划 code, for the export")

    p = sub.add_parser("fix", help="record that a 差评 was rectified")
    _common(p)
    p.add_argument("rating", help="the rating id (or a unique start of it)")
    p.add_argument("--note", required=True, help="what was done")
    _by(p)

    p = sub.add_parser("extend", help="extend a 差评's deadline, with the reason")
    _common(p)
    p.add_argument("rating", help="the rating id (or a unique start of it)")
    p.add_argument("--until", required=True, type=_date, metavar="YYYY-MM-DD", help="the new deadline")
    p.add_argument("--reason", required=True, help="why it cannot be rectified in time")
    _by(p)

    p = sub.add_parser("reply", help="record the reply given to the citizen about a 差评")
    _common(p)
    p.add_argument("rating", help="the rating id (or a unique start of it)")
    p.add_argument("--text", required=True, help="what the citizen was told, and how")
    _by(p)

    p = sub.add_parser("appeal", help="file a staff appeal (申诉) against a rating")
    _common(p)
    p.add_argument("rating", help="the rating id (or a unique start of it)")
    p.add_argument("--grounds", required=True, help="the grounds of the appeal")
    _by(p, "who appeals (工号 or name), required")

    p = sub.add_parser("review", help="decide an appeal: uphold the rating or overturn it")
    _common(p)
    p.add_argument("appeal", type=int, help="the appeal number")
    decision = p.add_mutually_exclusive_group(required=True)
    decision.add_argument("--uphold", dest="decision", action="store_const", const="upheld",
                          help="the rating stands")
    decision.add_argument("--overturn", dest="decision", action="store_const", const="overturned",
                          help="the rating leaves the figures (it stays in the data, marked)")
    p.add_argument("--note", required=True, help="the reviewer's note (复核意见)")
    p.add_argument("--reviewer", required=True, help="who decided")
    p.add_argument("--on", type=_date, metavar="YYYY-MM-DD", help="the day of the decision (default today)")

    p = sub.add_parser("pending", help="what is left to chase: open 差评 of every month, undecided appeals")
    _common(p)
    p.add_argument("--as-of", type=_date, metavar="YYYY-MM-DD", help="judge states on this day (default today)")
    return parser


COMMANDS = ("report", "export", "register", "fix", "extend", "reply", "appeal", "review", "pending")


def _state_line(ref: str, state: FollowUp) -> str:
    text = f"{ref}: {STATE_TEXT[state.state]}, deadline {state.deadline}"
    if state.fixed is not None:
        text += f", fixed {state.fixed.on}"
    if state.days_overdue:
        text += f", {state.days_overdue} days overdue"
    return text


def _report(desk: HallDesk, args: argparse.Namespace) -> None:
    data = desk.report(args.month, args.as_of, args.hall)
    if args.format == "json":
        print(json.dumps(data, ensure_ascii=False, indent=1))
    else:
        sys.stdout.write(format_report(data))
    if args.csv:
        for path in write_csv(data, Path(args.csv)):
            print(f"wrote {path}", file=sys.stderr)


def _export(desk: HallDesk, args: argparse.Namespace) -> None:
    data = desk.export(args.month, args.format, args.hall, args.as_of)
    text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}: {describe(data)}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _pending(desk: HallDesk, args: argparse.Namespace) -> None:
    as_of = args.as_of or china_today()
    data = desk.report(as_of.strftime("%Y-%m"), as_of)
    items = [item for item in data["carried_over"] + data["bad"]
             if item["state"] in ("open", "overdue") and item["time"][:10] <= as_of.isoformat()]
    print(f"未整改差评 {len(items)}（截至 {as_of}）")
    for item in items:
        late = f" 逾期 {item['days_overdue']} 天" if item["days_overdue"] else ""
        print(f"  {item['time']} {item['hall']}/{item['window_no']} {item['level_text']} 整改期限 {item['deadline']}"
              f"{late} {'已答复' if item['replies'] else '未答复'} id {item['id']}")
    waiting = [appeal for appeal in desk.appeals() if appeal.decision is None and appeal.filed_on <= as_of]
    print(f"待复核申诉 {len(waiting)}")
    for appeal in waiting:
        print(f"  #{appeal.n} {appeal.filed_on} {appeal.filed_by}：{appeal.grounds} rating {appeal.rating_id}")


def _run(desk: HallDesk, args: argparse.Namespace) -> None:
    command = args.command
    if command == "report":
        _report(desk, args)
    elif command == "export":
        _export(desk, args)
    elif command == "pending":
        _pending(desk, args)
    elif command == "register":
        desk.register(args.device, args.hall, args.name, args.area)
        print(f"{args.device} registered in hall {args.hall}")
    elif command == "fix":
        print(_state_line(args.rating, desk.record_fix(args.rating, args.note, args.on, args.by)))
    elif command == "extend":
        print(_state_line(args.rating, desk.extend(args.rating, args.until, args.reason, args.on, args.by)))
    elif command == "reply":
        print(_state_line(args.rating, desk.reply(args.rating, args.text, args.on, args.by)))
    elif command == "appeal":
        print(f"appeal #{desk.file_appeal(args.rating, args.grounds, args.by, args.on).n} filed")
    elif command == "review":
        appeal = desk.decide_appeal(args.appeal, args.decision, args.reviewer, args.note, args.on)
        outcome = "rating upheld (维持评价)" if appeal.decision == "upheld" else "rating overturned (撤销评价)"
        print(f"appeal #{appeal.n}: {outcome}")


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
    except LedgerError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0
