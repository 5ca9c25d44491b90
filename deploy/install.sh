#!/usr/bin/env bash
# Install (or update) Window Evaluator on Raspberry Pi OS (Debian 12 bookworm or 13 trixie).
#
#   sudo deploy/install.sh [--console usb|uart]
#
# From a checkout of the repository. Safe to run again: every step checks
# before it changes anything, and the technician's configuration and data
# are never overwritten. What it does:
#   - apt packages: Python, the build tools and headers lgpio and spidev need
#     where pip finds no wheel (Python 3.13 on Debian 13), python3-lgpio and
#     python3-spidev themselves, the CJK bitmap font, i2c-tools, NetworkManager;
#   - a venv in /opt/window-evaluator/venv (it sees the system's lgpio and
#     spidev) with this checkout and its `pi` extra installed;
#   - config.txt: I2C, SPI, the UART and the USB gadget (dtoverlay=dwc2), in one
#     marked block; g_serial loaded at boot (the USB console, /dev/ttyGS0);
#   - the kernel's console and the login prompt taken off the serial ports;
#   - the user `evaluator` in gpio i2c spi dialout netdev, and a polkit rule
#     that lets it set up Wi-Fi through NetworkManager (Improv);
#   - /etc/window-evaluator/config.toml (kept if there is one);
#   - the systemd unit, enabled and (re)started.
#
# --console usb (the default): the console is the USB gadget port /dev/ttyGS0;
# --console uart: /dev/serial0 (GPIO 14/15). Both ports are freed either way.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/common.sh
. "$SRC/deploy/common.sh"

CONSOLE=usb
while [ $# -gt 0 ]; do
    case $1 in
        --console) CONSOLE=${2:-}; shift 2 ;;
        --console=*) CONSOLE=${1#*=}; shift ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
case $CONSOLE in
    usb) CONSOLE_PORT=/dev/ttyGS0 ;;
    uart) CONSOLE_PORT=/dev/serial0 ;;
    *) die "--console must be usb or uart, not '$CONSOLE'" ;;
esac
[ -n "$ROOT" ] || [ "$(id -u)" = 0 ] || die "run as root: sudo $0"

codename=$(. "$ROOT/etc/os-release" 2>/dev/null && echo "${VERSION_CODENAME:-}") || codename=""
case $codename in
    bookworm|trixie) say "Raspberry Pi OS / Debian $codename" ;;
    *) say "warning: made for Raspberry Pi OS bookworm or trixie; this is '${codename:-unknown}'" ;;
esac

# --- packages --------------------------------------------------------------------
PACKAGES=(
    python3 python3-venv python3-pip python3-dev build-essential
    swig liblgpio-dev python3-lgpio python3-spidev
    xfonts-wqy i2c-tools network-manager polkitd
)
say "installing packages: ${PACKAGES[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"

# --- the program -------------------------------------------------------------------
if [ ! -x "$ROOT$VENV/bin/python" ]; then
    say "creating the venv $VENV"
    mkdir -p "$ROOT$PREFIX"
    # System site packages: python3-lgpio and python3-spidev from apt, so pip
    # builds nothing where it has no wheel.
    python3 -m venv --system-site-packages "$ROOT$VENV"
fi
say "installing $SRC into $VENV"
"$ROOT$VENV/bin/pip" install --quiet --upgrade "$SRC[pi]"
install -m 0644 "$SRC/README.md" "$ROOT$PREFIX/README.md"

# --- the user ---------------------------------------------------------------------------
for group in $SERVICE_GROUPS; do
    if ! grep -q "^$group:" "$ROOT/etc/group" 2>/dev/null; then
        say "creating the missing group $group"
        groupadd ${ROOT:+--prefix "$ROOT"} --system "$group"
    fi
done
if ! grep -q "^$SERVICE_USER:" "$ROOT/etc/passwd" 2>/dev/null; then
    say "creating the user $SERVICE_USER"
    useradd ${ROOT:+--prefix "$ROOT"} --system --user-group --home-dir "$STATE" --no-create-home \
        --shell /usr/sbin/nologin --comment "Window Evaluator" "$SERVICE_USER"
fi
usermod ${ROOT:+--prefix "$ROOT"} --append --groups "${SERVICE_GROUPS// /,}" "$SERVICE_USER"

# NetworkManager asks polkit; a service is in no login session, so say it may.
mkdir -p "$(dirname "$ROOT$POLKIT_RULE")"
cat > "$ROOT$POLKIT_RULE" <<EOF
// $APP: the device joins Wi-Fi for Improv (the technician's console) through nmcli.
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.freedesktop.NetworkManager.") == 0 && subject.user == "$SERVICE_USER") {
        return polkit.Result.YES;
    }
});
EOF
chmod 0644 "$ROOT$POLKIT_RULE"

# --- configuration --------------------------------------------------------------------
mkdir -p "$ROOT$ETC"
if [ ! -f "$ROOT$ETC/config.toml" ]; then
    say "writing $ETC/config.toml (console on $CONSOLE_PORT)"
    sed "s#^port = \"/dev/ttyGS0\"#port = \"$CONSOLE_PORT\"#" "$SRC/config.toml" > "$ROOT$ETC/config.toml"
    chmod 0644 "$ROOT$ETC/config.toml"
else
    say "keeping $ETC/config.toml"
fi

# --- the firmware and the kernel ------------------------------------------------------
BOOT=$(boot_dir)
reboot_needed=no
if [ -f "$BOOT/config.txt" ]; then
    before=$(cat "$BOOT/config.txt")
    strip_block "$BOOT/config.txt"
    [ -z "$(tail -c 1 "$BOOT/config.txt")" ] || echo >> "$BOOT/config.txt"
    # Last in the file and under [all]: later lines win over earlier ones.
    cat >> "$BOOT/config.txt" <<EOF
$BEGIN_MARK
[all]
dtparam=i2c_arm=on
dtparam=spi=on
enable_uart=1
dtoverlay=dwc2
$END_MARK
EOF
    [ "$before" = "$(cat "$BOOT/config.txt")" ] || reboot_needed=yes
else
    say "warning: no config.txt in $BOOT: enable I2C, SPI, the UART and dtoverlay=dwc2 by hand"
fi
mkdir -p "$(dirname "$ROOT$MODULES_CONF")"
printf '# %s: the I2C device nodes and the USB serial console (/dev/ttyGS0)\ni2c-dev\ndwc2\ng_serial\n' "$APP" \
    > "$ROOT$MODULES_CONF"

# The kernel's login console off the UART: the port is the device's.
if [ -f "$BOOT/cmdline.txt" ]; then
    removed=$(tr ' ' '\n' < "$BOOT/cmdline.txt" | grep -E '^console=(serial[0-9]|ttyAMA[0-9]|ttyS[0-9]|ttyGS[0-9])' || true)
    if [ -n "$removed" ]; then
        say "taking the kernel console off the serial port: $(echo "$removed" | tr '\n' ' ')"
        echo "$removed" >> "$ROOT$CMDLINE_NOTE"
        tr ' ' '\n' < "$BOOT/cmdline.txt" | grep -v -E '^console=(serial[0-9]|ttyAMA[0-9]|ttyS[0-9]|ttyGS[0-9])' \
            | grep -v '^$' | paste -sd ' ' > "$BOOT/cmdline.txt.new"
        mv "$BOOT/cmdline.txt.new" "$BOOT/cmdline.txt"
        reboot_needed=yes
    fi
fi

# --- systemd ------------------------------------------------------------------------------
install -D -m 0644 "$SRC/deploy/$UNIT" "$ROOT$UNIT_DIR/$UNIT"
# No login prompt on the ports the device answers on.
"${SYSTEMCTL[@]}" mask $GETTYS
if [ "$LIVE" = yes ]; then
    "${SYSTEMCTL[@]}" daemon-reload
    "${SYSTEMCTL[@]}" enable "$UNIT"
    "${SYSTEMCTL[@]}" restart "$UNIT"
else
    "${SYSTEMCTL[@]}" enable "$UNIT"
fi

say "installed. Check it with: sudo $VENV/bin/evaluator doctor"
if [ "$reboot_needed" = yes ]; then
    say "reboot to turn on I2C, SPI, the UART and the USB console: sudo reboot"
fi
