#!/bin/sh
# A syncmgr handler in POSIX sh (plus sed): one item, "notes", synced in three
# steps. It relies on the manager numbering its own requests with integers.
n=0 cancelled= action=continue
send() { printf '%s\n' "$1"; }
progress() {  # progress FIELDS: sends a progress request, sets $action from the reply
  n=$((n + 1))
  send '{"jsonrpc":"2.0","id":"sh'$n'","method":"progress","params":{"item":"notes",'"$1"'}}'
  while IFS= read -r line || exit 0; do
    case $line in
      *'"setItemStatus"'*) cancelled=yes ;;
      *'"id":"sh'$n'"'*)
        action=$(printf '%s\n' "$line" | sed -n 's/.*"action":"\([A-Za-z]*\)".*/\1/p')
        return ;;
    esac
  done
}
going() { [ "$action" = continue ] && [ -z "$cancelled" ]; }
while IFS= read -r line || exit 0; do
  id=$(printf '%s\n' "$line" | sed -n 's/^.*"id":\([0-9][0-9]*\).*$/\1/p')
  case $line in
    *'"method":"shutdown"'*) exit 0 ;;
    *'"method":"setItemStatus"'*) cancelled=yes; continue ;;
    *'"method":"initialize"'*) result='{"participate":true}' ;;
    *'"method":"getHandlerInfo"'*) result='{"name":"Shell example"}' ;;
    *'"method":"enumItems"'*)
      result='{"items":[{"id":"notes","name":"Notes","checked":true}],"complete":true}' ;;
    *'"method":"prepareForSync"'*) result='{}' ;;
    *'"method":"synchronize"'*)
      progress '"status":"updating","value":0,"max":3'
      for step in 1 2 3; do
        going || break
        sleep 1                       # the real work goes here
        progress '"value":'$step
      done
      if going; then progress '"status":"succeeded"'; else progress '"status":"stopped"'; fi
      result='{}' ;;
    *'"method":"showError"'*) result='{"retry":[]}' ;;
    *'"method":'*)
      send '{"jsonrpc":"2.0","id":'"${id:-null}"',"error":{"code":-32601,"message":"unknown method"}}'
      continue ;;
    *) continue ;;                    # a stray response
  esac
  send '{"jsonrpc":"2.0","id":'"$id"',"result":'"$result"'}'
done
