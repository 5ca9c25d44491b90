#!/usr/bin/env bash
# Install (or update) Window Evaluator on Raspberry Pi OS (Debian 12 bookworm or 13 trixie).
#
#   sudo deploy/install.sh [--console usb|uart] [--wheelhouse DIR]
#
# From a checkout of the repository. Safe to run again: every step checks
# before it changes anything, and the technician's configuration and data
# are never overwritten. Nothing is compiled. What it does:
#   - apt packages (deploy/debian-packages.txt): Python, the compiled modules
#     (Pillow, cryptography, cbor2, lgpio, spidev: python3-lgpio is in
#     Raspberry Pi OS's own archive), the CJK bitmap font, i2c-tools,
#     NetworkManager;
#   - a venv in /opt/window-evaluator/venv that sees those modules, with the
#     pinned pure-Python wheels of deploy/requirements-pi.txt and this checkout
#     (--wheelhouse DIR: from the wheels in DIR, offline);
#   - config.txt: only what the configuration uses, in one marked block
#     (python -m device.firmware): I2C at 400 kHz for an I2C panel, SPI for an
#     SPI panel, the UART for a UART console, the USB gadget (dtoverlay=dwc2,
#     g_serial at boot) for a USB console; the others turned off, so the
#     kernel holds no pin a button may use;
#   - the kernel's console and the login prompt taken off the serial ports;
#   - the user `evaluator` in gpio i2c spi dialout netdev, and a polkit rule
#     that lets it set up Wi-Fi through NetworkManager (Improv);
#   - /etc/window-evaluator/config.toml (kept if there is one);
#   - the systemd unit, enabled and (re)started.
#
# --package: run by the .deb's postinst (deploy/deb.py) from /opt/window-evaluator:
# apt already installed the packages (the .deb's Depends), the wheels are the
# package's own (offline), and the unit and the README are the package's files.
#
# --console usb (the default): the console is the USB gadget port /dev/ttyGS0;
# --console uart: /dev/serial0 (GPIO 14/15). Only for a new config.toml:
# an existing one says where the console is. Run it again after changing the
# panel's interface or the console's port: the firmware follows the config.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/common.sh
. "$SRC/deploy/common.sh"

CONSOLE=usb
WHEELHOUSE=
PACKAGE=no
while [ $# -gt 0 ]; do
    case $1 in
        --package) PACKAGE=yes; WHEELHOUSE=$SRC/wheels; shift ;;
        --console) CONSOLE=${2:-}; shift 2 ;;
        --console=*) CONSOLE=${1#*=}; shift ;;
        --wheelhouse) WHEELHOUSE=${2:-}; shift 2 ;;
        --wheelhouse=*) WHEELHOUSE=${1#*=}; shift ;;
        -h|--help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
if [ "$PACKAGE" = no ]; then
    mapfile -t PACKAGES < <(debian_packages "$SRC/deploy/debian-packages.txt")
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$WHEELHOUSE" ]; then
        apt-get update -q
    fi
    for package in python3-lgpio; do
        if ! apt-cache policy "$package" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            die "no $package in apt's sources: it comes from Raspberry Pi OS's own archive (raspi.list);" \
                "install on Raspberry Pi OS, or add that archive"
        fi
    done
    say "installing packages: ${PACKAGES[*]}"
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
fi

# --- the program -------------------------------------------------------------------
if [ ! -x "$ROOT$VENV/bin/python" ]; then
    say "creating the venv $VENV"
    mkdir -p "$ROOT$PREFIX"
    # System site packages: the compiled modules from apt, so pip builds nothing.
    python3 -m venv --system-site-packages "$ROOT$VENV"
fi
PIP_FROM=()
[ -z "$WHEELHOUSE" ] || PIP_FROM=(--no-index --find-links "$WHEELHOUSE")
"$ROOT$VENV/bin/pip" install --quiet --only-binary=:all: --no-deps "${PIP_FROM[@]}" \
    -r "$SRC/deploy/requirements-pi.txt"
if [ "$PACKAGE" = yes ]; then
    VERSION=$(cat "$SRC/VERSION" 2>/dev/null || true)
    say "installing window-evaluator ${VERSION:-} into $VENV from the package's wheels"
    "$ROOT$VENV/bin/pip" install --quiet --no-deps --only-binary=:all: --force-reinstall "${PIP_FROM[@]}" \
        "window-evaluator${VERSION:+==$VERSION}"
else
    say "installing $SRC into $VENV${WHEELHOUSE:+ (wheels from $WHEELHOUSE)}"
    "$ROOT$VENV/bin/pip" install --quiet --no-deps --no-build-isolation "${PIP_FROM[@]}" "$SRC"
    install -m 0644 "$SRC/README.md" "$ROOT$PREFIX/README.md"
fi

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
# Only what the configuration uses (device/pinmap.py decides; the device's checks refuse the pins it holds).
FIRMWARE=$("$ROOT$VENV/bin/python" -m device.firmware config-txt --config "$ROOT$ETC/config.toml" --root "$ROOT") \
    || die "$ETC/config.toml does not load: fix it, then run this again"
MODULES=$("$ROOT$VENV/bin/python" -m device.firmware modules --config "$ROOT$ETC/config.toml" --root "$ROOT")
say "$("$ROOT$VENV/bin/python" -m device.firmware summary --config "$ROOT$ETC/config.toml" --root "$ROOT")"
BOOT=$(boot_dir)
reboot_needed=no
if [ -f "$BOOT/config.txt" ]; then
    before=$(cat "$BOOT/config.txt")
    strip_block "$BOOT/config.txt"
    [ -z "$(tail -c 1 "$BOOT/config.txt")" ] || echo >> "$BOOT/config.txt"
    # Last in the file and under [all]: later lines win over earlier ones.
    printf '%s\n[all]\n%s\n%s\n' "$BEGIN_MARK" "$FIRMWARE" "$END_MARK" >> "$BOOT/config.txt"
    [ "$before" = "$(cat "$BOOT/config.txt")" ] || reboot_needed=yes
else
    say "warning: no config.txt in $BOOT: set these by hand: $(echo "$FIRMWARE" | tr '\n' ' ')"
fi
mkdir -p "$(dirname "$ROOT$MODULES_CONF")"
{ printf '# %s: the I2C device nodes and the USB serial console (/dev/ttyGS0), as the configuration uses\n' "$APP"
  [ -z "$MODULES" ] || printf '%s\n' "$MODULES"; } > "$ROOT$MODULES_CONF"

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
if [ "$PACKAGE" = yes ]; then
    # The package's unit is in /lib/systemd/system; a copy an earlier install.sh left in /etc would hide it.
    if [ -f "$ROOT$UNIT_DIR/$UNIT" ] && grep -q "^# Installed by deploy/install.sh" "$ROOT$UNIT_DIR/$UNIT"; then
        rm -f "$ROOT$UNIT_DIR/$UNIT"
    fi
else
    install -D -m 0644 "$SRC/deploy/$UNIT" "$ROOT$UNIT_DIR/$UNIT"
fi
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
    say "reboot to turn on what the configuration uses (see config.txt): sudo reboot"
fi
