// HTTP/1.x: a thin layer over agent/http_head.h, which the span builder also uses.
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "agent/http_head.h"
#include "agent/protocol/internal/text.h"
#include "agent/protocol/protocol.h"

namespace reptrace {
namespace protocol {

std::optional<Request> ParseHttpRequest(absl::string_view head, const ParseOptions& options) {
  std::optional<HttpRequestLine> line = ParseHttpRequestLine(head.substr(0, kMaxInspectedBytes));
  if (!line) return std::nullopt;
  // http_head admits only printable ASCII in the method and target. Built where it is
  // returned: a Request moved into an optional was a copy of every short string in it.
  std::optional<Request> request(std::in_place);
  request->protocol = Protocol::kHttp;
  request->name = absl::StrCat(line->method, " ", line->path);
  request->attributes.push_back({"http.request.method", std::string(line->method)});
  request->attributes.push_back({"url.path", std::string(line->path)});
  if (options.http_query && !line->query.empty()) {
    request->attributes.push_back({"url.query", std::string(line->query)});
  }
  return request;
}

std::optional<Response> ParseHttpResponse(absl::string_view head) {
  std::optional<int> code = ParseHttpStatusCode(head.substr(0, kMaxInspectedBytes));
  if (!code) return std::nullopt;
  std::optional<Response> response(std::in_place);
  response->attributes.push_back({"http.response.status_code", absl::StrCat(*code)});
  // A 4xx is the client's doing: the exchange itself worked (OpenTelemetry's rule for
  // server spans).
  if (*code >= 500) {
    response->error = true;
    response->status_message = absl::StrCat("HTTP ", *code);
  }
  return response;
}

}  // namespace protocol
}  // namespace reptrace
