# shellcheck shell=bash
# Helpers shared by the cluster launchers (launch/tpu_pod.sh, xpk.sh, slurm.sh, jobset.sh), kept
# in one place so that their flag errors, --help and shell quoting stay the same everywhere.
# Sourced, never run: the launcher sets `prog` (its name in messages, e.g. launch/xpk.sh) first,
#   prog="launch/xpk.sh"
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# --help: the launcher's own header comment (line 2 up to the first line that is no comment),
# read from "$0", the script being run, not from this file.
usage() { sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; }
die() { printf '%s: %s\n(see %s --help)\n' "${prog}" "$*" "${prog}" >&2; exit 2; }
# need_value "$@" inside the flag loop: the flag in $1 must be followed by a value in $2.
need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "flag $1 needs a value"; }
# need_command "$@" after the flag loop: what is left is the COMMAND, given after --.
need_command() {
  [[ $# -gt 0 ]] || die "missing COMMAND: give it after --, e.g. ${prog} -- orchestra train --config ..."
}
unknown_flag() { die "unknown flag '$1' (the command to run goes after --)"; }

# Flag values. need_positive_int FLAG VALUE (1, 2, ...), need_int FLAG VALUE (0, 1, ...),
# need_port FLAG VALUE (digits), need_dns_name FLAG VALUE (a Kubernetes object name).
need_positive_int() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 wants a positive integer, got '$2'"; }
need_int() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1 wants an integer, got '$2'"; }
need_port() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1 wants a number, got '$2'"; }
need_dns_name() {
  [[ "$2" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
    || die "$1 '$2': lower-case letters, digits and '-', starting with a letter"
}
# GKE launchers: --tpu-type and --device-type exclude each other; neither means a v5p-128 slice.
# Sets the caller's tpu_type.
pick_tpu_or_gpu() {
  [[ -n "${tpu_type}" && -n "${device_type}" ]] && die "--tpu-type and --device-type exclude each other"
  [[ -n "${tpu_type}" || -n "${device_type}" ]] || tpu_type="v5p-128"
}

# Shell quoting that reads well and pastes into any POSIX shell: plain words stay bare, others
# go in single quotes ('\'' for a quote inside); words with control characters get printf %q
# (bash reads those back; the hosts and pods run bash).
quote_word() {
  local w="$1"
  if [[ "${w}" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then printf '%s' "${w}"
  elif [[ "${w}" == *[$'\n\r\t']* ]]; then printf '%q' "${w}"
  else printf "'%s'" "${w//\'/\'\\\'\'}"; fi
}
# One line for a command given as words, each quoted by quote_word.
quote() {
  local out="" word
  for word in "$@"; do out+="$(quote_word "${word}") "; done
  printf '%s' "${out% }"
}

# parse_flags "$@": the launcher's flags, then -- COMMAND, left in `command_words`. -h/--help
# and -- are handled here; every other word goes to the launcher's own `flag` function, which
# sets its variable and `taken` (how many words it used; 0 for a flag it does not know).
parse_flags() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --) shift; break ;;
    esac
    taken=0
    flag "$@"
    (( taken > 0 )) || unknown_flag "$1"
    shift "${taken}"
  done
  need_command "$@"
  command_words=("$@")
}
