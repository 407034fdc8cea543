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
  // Built where it is returned: every return returns `request` (returning std::nullopt
  // too made GCC move it out, a copy of every short string in it).
  std::optional<Request> request;
  std::optional<HttpRequestLine> line = ParseHttpRequestLine(head.substr(0, kMaxInspectedBytes));
  if (!line) return request;
  // http_head admits only printable ASCII in the method and target, and its results view
  // `head` (or a constant "/").
  request.emplace();
  request->protocol = Protocol::kHttp;
  const absl::string_view method = line->method;
  const absl::string_view path = line->path;
  if (path.data() == method.data() + method.size() + 1) {
    // The request line starts with the name: "GET /index.html HTTP/1.1".
    request->name = Text::View(absl::string_view(method.data(), method.size() + 1 + path.size()));
  } else {
    request->name = absl::StrCat(method, " ", path);
  }
  request->attributes.push_back({"http.request.method", Text::View(method)});
  request->attributes.push_back({"url.path", Text::View(path)});
  if (options.http_query && !line->query.empty()) {
    request->attributes.push_back({"url.query", Text::View(line->query)});
  }
  return request;
}

std::optional<Response> ParseHttpResponse(absl::string_view head) {
  std::optional<Response> response;  // built where it is returned, as a request is
  std::optional<int> code = ParseHttpStatusCode(head.substr(0, kMaxInspectedBytes));
  if (!code) return response;
  response.emplace();
  // The code's three digits in `head` are its decimal text (it is at least 100).
  response->attributes.push_back({"http.response.status_code", Text::View(head.substr(9, 3))});
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
