# Shared by deploy/install.sh and deploy/uninstall.sh (sourced, not run).
#
# ROOT: a prefix for every file read or written (empty on a Pi; tests and
# image builds set it). With ROOT set, systemctl works offline on it
# (--root) and nothing is started or reloaded, unless SYSTEMD_LIVE=yes.

ROOT=${ROOT:-}
ROOT=${ROOT%/}
APP=window-evaluator
SERVICE_USER=evaluator
SERVICE_GROUPS="gpio i2c spi dialout netdev"
PREFIX=/opt/$APP
VENV=$PREFIX/venv
ETC=/etc/$APP
STATE=/var/lib/$APP
UNIT=$APP.service
UNIT_DIR=/etc/systemd/system
POLKIT_RULE=/etc/polkit-1/rules.d/50-$APP.rules
MODULES_CONF=/etc/modules-load.d/$APP.conf
# The kernel's login console on the UART; what install.sh took out of cmdline.txt is kept here.
CMDLINE_NOTE=$ETC/cmdline-removed
GETTYS="serial-getty@ttyGS0.service serial-getty@ttyS0.service serial-getty@ttyAMA0.service"
# The mark is kept as the first installs wrote it, so that their block is found and replaced.
BEGIN_MARK="# >>> $APP (deploy/install.sh): I2C, SPI, UART and the USB serial gadget"
END_MARK="# <<< $APP"

if [ -n "$ROOT" ] && [ "${SYSTEMD_LIVE:-no}" != yes ]; then
    SYSTEMCTL=(systemctl --root="$ROOT")
    LIVE=no
else
    SYSTEMCTL=(systemctl)
    LIVE=yes
fi

say() { printf '%s: %s\n' "$(basename "$0")" "$*"; }
die() { say "$*" >&2; exit 1; }

# The firmware's folder: /boot/firmware since Debian 12 (bookworm), /boot before.
boot_dir() {
    if [ -e "$ROOT/boot/firmware/config.txt" ] || [ -d "$ROOT/boot/firmware" ]; then
        echo "$ROOT/boot/firmware"
    else
        echo "$ROOT/boot"
    fi
}

# Remove our marked block from config.txt (nothing else); prints whether it was there.
strip_block() {
    local file=$1
    [ -f "$file" ] || return 0
    if grep -qxF "$BEGIN_MARK" "$file"; then
        local tmp
        tmp=$(mktemp)
        awk -v b="$BEGIN_MARK" -v e="$END_MARK" '
            $0 == b {skip = 1; next}
            skip && $0 == e {skip = 0; next}
            !skip {print}' "$file" > "$tmp"
        cat "$tmp" > "$file"
        rm -f "$tmp"
    fi
}

# The package names of deploy/debian-packages.txt (first column; comments and blank lines skipped).
debian_packages() { grep -v '^[[:space:]]*\(#\|$\)' "$1" | awk '{print $1}'; }

in_file() { [ -f "$2" ] && grep -q "$1" "$2"; }
