#!/usr/bin/env bash
# Remove Window Evaluator from a Raspberry Pi.
#
#   sudo deploy/uninstall.sh [--purge]
#
# Stops and removes the service, the program (/opt/window-evaluator), the
# polkit rule, the modules and the config.txt block install.sh added, and gives
# the serial ports back to the login console. Kept unless --purge is given:
# the ratings not yet delivered, the settings and the device key
# (/var/lib/window-evaluator), the configuration (/etc/window-evaluator) and
# the user `evaluator` who owns them. apt packages stay (others may use them).
#
# --package: run by the .deb's prerm on removal: the package's own files
# (the unit, /opt/window-evaluator but its venv) are left to dpkg, and the
# purge of the data is the postrm's (dpkg --purge).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/common.sh
. "$SRC/deploy/common.sh"

PURGE=no
PACKAGE=no
while [ $# -gt 0 ]; do
    case $1 in
        --purge) PURGE=yes; shift ;;
        --package) PACKAGE=yes; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$ROOT" ] || [ "$(id -u)" = 0 ] || die "run as root: sudo $0"

if [ "$LIVE" = yes ]; then
    "${SYSTEMCTL[@]}" disable --now "$UNIT" || true
else
    "${SYSTEMCTL[@]}" disable "$UNIT" || true
fi
"${SYSTEMCTL[@]}" unmask $GETTYS || true
if [ "$PACKAGE" = yes ]; then
    rm -rf "$ROOT$VENV"          # made by the postinst, not a file of the package
else
    rm -f "$ROOT$UNIT_DIR/$UNIT"
    [ "$LIVE" = no ] || "${SYSTEMCTL[@]}" daemon-reload
    rm -rf "$ROOT$PREFIX"
fi
rm -f "$ROOT$POLKIT_RULE" "$ROOT$MODULES_CONF"

BOOT=$(boot_dir)
strip_block "$BOOT/config.txt"
# The kernel console install.sh took off the UART goes back where it was: first.
if [ -f "$ROOT$CMDLINE_NOTE" ] && [ -f "$BOOT/cmdline.txt" ]; then
    back=$(sort -u "$ROOT$CMDLINE_NOTE" | tr '\n' ' ')
    say "giving the serial port back to the kernel console: $back"
    printf '%s%s\n' "$back" "$(cat "$BOOT/cmdline.txt")" > "$BOOT/cmdline.txt.new"
    mv "$BOOT/cmdline.txt.new" "$BOOT/cmdline.txt"
fi
rm -f "$ROOT$CMDLINE_NOTE"

if [ "$PURGE" = yes ] && [ "$PACKAGE" = no ]; then
    say "purging $STATE (ratings not delivered, settings, the device key), $ETC and the user $SERVICE_USER"
    rm -rf "$ROOT$STATE" "$ROOT$ETC"
    if grep -q "^$SERVICE_USER:" "$ROOT/etc/passwd" 2>/dev/null; then
        userdel ${ROOT:+--prefix "$ROOT"} "$SERVICE_USER"
    fi
else
    rmdir "$ROOT$ETC" 2>/dev/null || true
    how="--purge"
    [ "$PACKAGE" = no ] || how="apt purge window-evaluator"
    say "kept $STATE (ratings not delivered, settings, the device key), $ETC and the user $SERVICE_USER;" \
        "$how removes them"
fi
say "removed"
