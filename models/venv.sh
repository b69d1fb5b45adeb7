# Sourced by the models' export scripts (bash, after `cd "$here"`). Their venvs live in
# the cache, not the repo, and are kept in step with the pins on every run, so that an
# edited requirements.txt takes effect without anyone deleting a venv by hand.

# pinned_venv VAR NAME REQUIREMENTS [PIP_OPTION...]: sets $venv to $VAR if set, else to
# edgeinfer/NAME in the user's cache; makes it on first use; installs REQUIREMENTS.
pinned_venv() {
  local var="$1" name="$2" requirements="$3"
  shift 3
  venv="${!var:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/$name}"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$@" -r "$requirements"
}
