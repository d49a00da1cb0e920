# Parse "--name value" (or "--name=value") command-line options into shell variables of the same name; sourced by
# run.sh after its defaults are set. Only names that already exist as variables are accepted, so a typo is an error
# instead of a silently ignored option. "--help" prints the usage text run.sh keeps in $help_message.
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            echo "${help_message:-}"
            exit 0 ;;
        --*=*)
            name="${1%%=*}"; value="${1#*=}"; shift ;;
        --*)
            if [ $# -lt 2 ]; then
                echo "$0: option $1 needs a value" >&2
                exit 1
            fi
            name="$1"; value="$2"; shift 2 ;;
        *)
            echo "$0: unexpected argument '$1' (options are --name value; see --help)" >&2
            exit 1 ;;
    esac
    name="${name#--}"
    name="${name//-/_}"
    if ! declare -p "${name}" > /dev/null 2>&1; then
        echo "$0: unknown option --${name} (see --help)" >&2
        exit 1
    fi
    printf -v "${name}" '%s' "${value}"
done
unset name value
