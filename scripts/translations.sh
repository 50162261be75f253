#!/usr/bin/env bash
# Message catalogs of the pages, one directory per area (core, public, wallet, checkout, console):
#   scripts/translations.sh extract AREA   extract AREA's messages and update (or create) its zh catalog
#   scripts/translations.sh compile        compile every messages.po into messages.mo (make install does)
# AREA's messages are those of web/templates/AREA/, web/AREA.py and web/AREA_*.py (core: base.html,
# web/templates/*.html at the top level and the web/*.py modules that are no area's: __init__, security,
# i18n, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PYBABEL="${PYBABEL:-.venv/bin/pybabel}"
WEB=voucher_service/web
TR="$WEB/translations"
case "${1:-}" in
  extract)
    area="${2:?usage: $0 extract AREA}"
    [[ "$area" =~ ^[a-z]+$ ]] || { echo "bad area: $area" >&2; exit 2; }
    files=()
    if [[ "$area" == core ]]; then
      files+=("$WEB"/templates/*.html)
      for f in "$WEB"/*.py; do
        case "$(basename "$f" .py)" in public|wallet|checkout|console|public_*|wallet_*|checkout_*|console_*) ;;
          *) files+=("$f") ;;
        esac
      done
    else
      [[ -d "$WEB/templates/$area" ]] && while IFS= read -r f; do files+=("$f"); done \
        < <(find "$WEB/templates/$area" -name '*.html' | sort)
      [[ -f "$WEB/$area.py" ]] && files+=("$WEB/$area.py")
      for f in "$WEB/${area}"_*.py; do [[ -f "$f" ]] && files+=("$f"); done
    fi
    cfg=$(mktemp)
    trap 'rm -f "$cfg" "$pot"' EXIT
    printf '[python: **.py]\n[jinja2: **.html]\n' > "$cfg"
    pot=$(mktemp --suffix=.pot)
    "$PYBABEL" --quiet extract -F "$cfg" -k _ -k gettext -k ngettext:1,2 -k lazy_gettext -k _l \
      --no-location --sort-output -o "$pot" "${files[@]}"
    po="$TR/$area/zh/LC_MESSAGES/messages.po"
    if [[ -f "$po" ]]; then
      "$PYBABEL" --quiet update --no-wrap --no-fuzzy-matching --ignore-obsolete -i "$pot" -d "$TR/$area" -l zh
    else
      "$PYBABEL" --quiet init --no-wrap -i "$pot" -d "$TR/$area" -l zh
    fi
    echo "$po"
    ;;
  compile)
    for dir in "$TR"/*/; do
      [[ -f "$dir/zh/LC_MESSAGES/messages.po" ]] || continue
      "$PYBABEL" --quiet compile --statistics -d "$dir" -l zh 2>&1 | sed "s|^|$(basename "$dir"): |" >&2 || exit 1
    done
    ;;
  *)
    echo "usage: $0 extract AREA | compile" >&2
    exit 2
    ;;
esac
