#!/bin/sh
# A syncmgr handler in plain POSIX shell: two items, alpha and beta, each
# counting to STEPS with progress; honours cancels; the item FAIL_ITEM fails
# once with an actionable log entry that `syncmgr log show` retries. Needs jq
# (a Debian package: apt-get install -y jq) to read the manager's JSON safely.
#
#   syncmgr register shell -- sh examples/handlers/shell-handler.sh [STEPS] [SECONDS_PER_STEP] [FAIL_ITEM]
#
# The protocol (docs/protocol.md): one JSON-RPC 2.0 message per line on
# stdin/stdout; stdout is the protocol only, messages for humans go to stderr.

command -v jq >/dev/null 2>&1 || { echo "shell-handler: jq is required" >&2; exit 1; }
STEPS=${1:-5}        # steps per item
DELAY=${2:-0.2}      # seconds per step (a fraction needs a sleep that takes one: GNU, busybox, BSD)
FAIL=${3:-}          # an item that fails until retried (none by default)
next_id=0            # the id of our last request to the manager
skipped=" "          # items the manager cancelled with setItemStatus, space-separated
stop_all=0           # 1 once the manager answered cancelAll
retried=" "          # items showError asked to retry: they succeed from now on

send() { printf '%s\n' "$1"; }                                   # one message, one line
respond() { send "{\"jsonrpc\":\"2.0\",\"id\":$1,\"result\":$2}"; }  # answer request $1

# parse LINE: sets p_method, p_id (JSON text, "null" if none), p_item, p_error
# and p_action. jq quotes every value for the shell (@sh), so eval is safe.
parse() {
    p_method="" p_id=null p_item="" p_error="" p_action=""     # what a non-JSON line leaves
    eval "$(printf '%s\n' "$1" | jq -r '
        "p_method=\(.method // "" | @sh) p_id=\(.id // null | tojson | @sh)",
        "p_item=\(.params.item? // "" | tostring | @sh)",
        "p_error=\(.params.errorId? // "" | tostring | @sh)",
        "p_action=\(.result.action? // "" | tostring | @sh)"' 2>/dev/null)"
}

# call METHOD PARAMS: sends a request and waits for its answer; sets $action
# (for progress: continue, cancelItem or cancelAll).
call() {
    next_id=$((next_id + 1))
    send "{\"jsonrpc\":\"2.0\",\"id\":$next_id,\"method\":\"$1\",\"params\":$2}"
    while IFS= read -r reply; do                                # other messages may come first
        parse "$reply"
        case $p_method in
            setItemStatus) skipped="$skipped$p_item " ;;          # a cancel, noted for later
            shutdown) exit 0 ;;                                 # the session is over
            "") [ "$p_id" = "$next_id" ] && { action=$p_action; return; } ;;  # our answer
        esac
    done
    exit 0                                                      # end of input: the manager is gone
}

progress() { call progress "{\"item\":\"$1\",$2}"; }           # progress ITEM FIELDS

# must_stop ITEM: true when the manager asked to stop ITEM (or every item).
must_stop() {
    [ "$action" = cancelAll ] && stop_all=1                     # remembered for the next items
    [ "$stop_all" = 1 ] || [ "$action" = cancelItem ] && return 0
    case $skipped in *" $1 "*) return 0 ;; esac                 # setItemStatus skipped
    return 1
}

# sync_one ITEM: syncs one item, ending it in exactly one final status.
sync_one() {
    action=continue
    if must_stop "$1"; then progress "$1" '"status":"skipped"'; return; fi  # cancelled before it started
    progress "$1" "\"status\":\"updating\",\"value\":0,\"max\":$STEPS"
    step=1
    while [ "$step" -le "$STEPS" ]; do
        if must_stop "$1"; then progress "$1" '"status":"stopped","text":"stopped"'; return; fi
        sleep "$DELAY"                                          # the real work goes here
        progress "$1" "\"value\":$step,\"text\":\"step $step of $STEPS\""
        step=$((step + 1))
    done
    if must_stop "$1"; then progress "$1" '"status":"stopped","text":"stopped"'; return; fi
    if [ "$1" = "$FAIL" ] && [ "$retried" = "${retried#* $1 }" ]; then      # fails until retried
        call logError "{\"level\":\"error\",\"text\":\"$1 failed\",\"item\":\"$1\",\"errorId\":\"retry-$1\",\"actionable\":true}"
        progress "$1" "\"status\":\"failed\",\"text\":\"$1 failed\""; return
    fi
    progress "$1" '"status":"succeeded","text":"done"'
}

# The main loop: one message from the manager per line.
while IFS= read -r line; do
    parse "$line"
    case $p_method in
        initialize) respond "$p_id" '{"participate":true}' ;;
        getHandlerInfo) respond "$p_id" '{"name":"Shell example"}' ;;
        enumItems) respond "$p_id" '{"items":[{"id":"alpha","name":"Alpha","checked":true},{"id":"beta","name":"Beta","checked":true}],"complete":true}' ;;
        prepareForSync)                                         # remember the chosen items
            items=$(printf '%s\n' "$line" | jq -r '.params.items[]')
            skipped=" " stop_all=0
            respond "$p_id" '{}' ;;
        synchronize)                                            # sync them, then answer
            sync_id=$p_id                                       # parse overwrites p_id
            for it in $items; do sync_one "$it"; done
            respond "$sync_id" '{}' ;;
        showError)                                              # the user acted on our entry
            case $p_error in
                retry-alpha|retry-beta) retried="$retried${p_error#retry-} "  # it succeeds now
                    respond "$p_id" "{\"retry\":[\"${p_error#retry-}\"]}" ;;    # sync it again
                *) respond "$p_id" '{"retry":[]}' ;;
            esac ;;
        setItemStatus) skipped="$skipped$p_item " ;;              # a cancel before synchronize
        shutdown) exit 0 ;;                                     # the session is over
        *) [ "$p_id" = null ] ||                                # an unknown request: say so
            send "{\"jsonrpc\":\"2.0\",\"id\":$p_id,\"error\":{\"code\":-32601,\"message\":\"method not found\"}}" ;;
    esac
done                                                            # end of input: exit
