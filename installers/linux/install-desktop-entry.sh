#!/bin/sh
# Adds SemBridge Studio to the current user's application menu, pointing at this folder
# (run it again after moving the folder).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
mkdir -p "$target"
sed "s#@PREFIX@#$here#g" "$here/sembridge-studio.desktop.in" > "$target/sembridge-studio.desktop"
echo "installed $target/sembridge-studio.desktop"
