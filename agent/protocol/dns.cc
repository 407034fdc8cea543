// DNS messages (RFC 1035 section 4; over TCP with the 2-byte length prefix of section 4.2.2).
#include "absl/strings/str_cat.h"
#include "agent/protocol/internal/text.h"
#include "agent/protocol/protocol.h"

namespace reptrace {
namespace protocol {
namespace {

using internal::ReadBe16;

constexpr size_t kHeaderBytes = 12;
constexpr size_t kMaxNameBytes = 255;  // on the wire, length bytes included

constexpr uint16_t kFlagResponse = 0x8000;
constexpr uint16_t kFlagAuthoritative = 0x0400;
constexpr uint16_t kFlagTruncated = 0x0200;
constexpr uint16_t kFlagRecursionAvailable = 0x0080;
constexpr uint16_t kFlagZ = 0x0040;
int Opcode(uint16_t flags) { return (flags >> 11) & 0xF; }
int Rcode(uint16_t flags) { return flags & 0xF; }

struct Header {
  uint16_t id;
  uint16_t flags;
  uint16_t questions;
  uint16_t answers;
  uint16_t authorities;
  uint16_t additionals;
};

// The DNS message in `head`: on TCP after the length prefix, which must announce at least a
// header. The message may still be cut short by the capture.
std::optional<absl::string_view> Message(absl::string_view head, Transport transport) {
  head = head.substr(0, kMaxInspectedBytes);
  if (transport == Transport::kTcp) {
    if (head.size() < 2 || ReadBe16(head, 0) < kHeaderBytes) return std::nullopt;
    head = head.substr(2, ReadBe16(head, 0));
  }
  if (head.size() < kHeaderBytes) return std::nullopt;
  return head;
}

Header ReadHeader(absl::string_view message) {
  return Header{ReadBe16(message, 0), ReadBe16(message, 2), ReadBe16(message, 4),
                ReadBe16(message, 6), ReadBe16(message, 8), ReadBe16(message, 10)};
}

// Host-name characters, plus '_' (SRV, DKIM) and '*' (wildcards). Anything else in a
// question is far more likely to be another protocol's bytes than a real name.
bool IsNameChar(char c) {
  return internal::IsAsciiAlpha(c) || internal::IsAsciiDigit(c) || c == '-' || c == '_' ||
         c == '*';
}

struct Question {
  std::string name;  // lower case, no trailing dot; "." for the root
  uint16_t type;
  uint16_t klass;
};

// The question at offset 12, whole (name, type and class) or nullopt. Questions never use
// compression pointers.
std::optional<Question> ReadQuestion(absl::string_view message) {
  std::string name;
  size_t pos = kHeaderBytes;
  while (true) {
    if (pos >= message.size()) return std::nullopt;
    const uint8_t length = static_cast<uint8_t>(message[pos]);
    if (length == 0) break;
    if (length > 63 || pos + 1 + length - kHeaderBytes + 1 > kMaxNameBytes) return std::nullopt;
    if (pos + 1 + length > message.size()) return std::nullopt;
    if (!name.empty()) name.push_back('.');
    for (char c : message.substr(pos + 1, length)) {
      if (!IsNameChar(c)) return std::nullopt;
      // Resolvers randomise the case of names (DNS 0x20); one name, one span name.
      name.push_back(internal::ToAsciiLower(c));
    }
    pos += 1 + length;
  }
  if (pos + 5 > message.size()) return std::nullopt;
  if (name.empty()) name = ".";
  return Question{std::move(name), ReadBe16(message, pos + 1), ReadBe16(message, pos + 3)};
}

std::string TypeName(uint16_t type) {
  switch (type) {
    case 1: return "A";
    case 2: return "NS";
    case 5: return "CNAME";
    case 6: return "SOA";
    case 12: return "PTR";
    case 15: return "MX";
    case 16: return "TXT";
    case 28: return "AAAA";
    case 33: return "SRV";
    case 35: return "NAPTR";
    case 43: return "DS";
    case 48: return "DNSKEY";
    case 64: return "SVCB";
    case 65: return "HTTPS";
    case 252: return "AXFR";
    case 255: return "ANY";
    case 257: return "CAA";
    default: return absl::StrCat("TYPE", type);
  }
}

std::string RcodeName(int rcode) {
  switch (rcode) {
    case 0: return "NOERROR";
    case 1: return "FORMERR";
    case 2: return "SERVFAIL";
    case 3: return "NXDOMAIN";
    case 4: return "NOTIMP";
    case 5: return "REFUSED";
    case 6: return "YXDOMAIN";
    case 7: return "YXRRSET";
    case 8: return "NXRRSET";
    case 9: return "NOTAUTH";
    case 10: return "NOTZONE";
    default: return absl::StrCat("RCODE", rcode);
  }
}

bool IsKnownClass(uint16_t klass) {
  return klass == 1 /* IN */ || klass == 3 /* CH */ || klass == 4 /* HS */ || klass == 255;
}

}  // namespace

std::optional<Request> ParseDnsRequest(absl::string_view head, Transport transport) {
  std::optional<absl::string_view> message = Message(head, transport);
  if (!message) return std::nullopt;
  const Header header = ReadHeader(*message);
  // A standard query as stub resolvers send it: one question, no records but EDNS's OPT
  // (and a TSIG or cookie at most), no response-only flag.
  constexpr uint16_t kNotInQueries = kFlagResponse | kFlagAuthoritative | kFlagTruncated |
                                     kFlagRecursionAvailable | kFlagZ;
  if ((header.flags & kNotInQueries) != 0 || Opcode(header.flags) != 0 ||
      Rcode(header.flags) != 0 || header.questions != 1 || header.answers != 0 ||
      header.authorities != 0 || header.additionals > 2) {
    return std::nullopt;
  }
  std::optional<Question> question = ReadQuestion(*message);
  if (!question || question->type == 0 || !IsKnownClass(question->klass)) return std::nullopt;
  const std::string type = TypeName(question->type);
  Request request{Protocol::kDns, absl::StrCat("DNS ", type, " ", question->name), {}, header.id};
  request.attributes.push_back({"dns.question.name", question->name});
  request.attributes.push_back({"dns.question.type", type});
  request.attributes.push_back({"dns.id", absl::StrCat(header.id)});
  return request;
}

std::optional<Response> ParseDnsResponse(absl::string_view head, Transport transport) {
  std::optional<absl::string_view> message = Message(head, transport);
  if (!message) return std::nullopt;
  const Header header = ReadHeader(*message);
  if ((header.flags & kFlagResponse) == 0 || Opcode(header.flags) != 0 ||
      header.questions > 1) {
    return std::nullopt;
  }
  const int rcode = Rcode(header.flags);
  Response response;
  response.exchange_id = header.id;
  response.attributes.push_back({"dns.id", absl::StrCat(header.id)});
  response.attributes.push_back({"dns.rcode", RcodeName(rcode)});
  response.attributes.push_back({"dns.answer_count", absl::StrCat(header.answers)});
  // NXDOMAIN is an answer ("no such name"); these say the query itself failed.
  if (rcode == 1 || rcode == 2 || rcode == 4 || rcode == 5) {
    response.error = true;
    response.status_message = RcodeName(rcode);
  }
  return response;
}

}  // namespace protocol
}  // namespace reptrace
