#include "trainyard/assets/xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <memory>

namespace trainyard::assets {
namespace {

// Listings are a few MB at most (5000 entries of a few hundred bytes).
constexpr size_t kMaxXmlBytes = 64u << 20;

struct DocDeleter {
  void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};

std::string Name(const xmlNode* node) { return reinterpret_cast<const char*>(node->name); }

// The concatenated text directly inside `node`.
std::string DirectText(const xmlNode* node) {
  std::string out;
  for (const xmlNode* c = node->children; c != nullptr; c = c->next) {
    if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content != nullptr) {
      out += reinterpret_cast<const char*>(c->content);
    }
  }
  return out;
}

bool HasElementChild(const xmlNode* node) {
  for (const xmlNode* c = node->children; c != nullptr; c = c->next) {
    if (c->type == XML_ELEMENT_NODE) return true;
  }
  return false;
}

void CollectLeaves(const xmlNode* node, std::map<std::string, std::string>* out, int depth) {
  if (depth > 16) return;
  for (const xmlNode* c = node->children; c != nullptr; c = c->next) {
    if (c->type != XML_ELEMENT_NODE) continue;
    if (HasElementChild(c)) {
      CollectLeaves(c, out, depth + 1);
    } else {
      out->emplace(Name(c), DirectText(c));
    }
  }
}

void Walk(const xmlNode* node, std::string_view record, XmlRecords* out, int depth) {
  if (depth > 16) return;
  for (const xmlNode* c = node; c != nullptr; c = c->next) {
    if (c->type != XML_ELEMENT_NODE) continue;
    const std::string name = Name(c);
    if (name == record) {
      std::map<std::string, std::string> fields;
      CollectLeaves(c, &fields, 0);
      out->records.push_back(std::move(fields));
      continue;
    }
    if (HasElementChild(c)) {
      Walk(c->children, record, out, depth + 1);
    } else {
      out->fields.emplace(name, DirectText(c));
    }
  }
}

}  // namespace

StatusOr<XmlRecords> ParseXmlRecords(std::string_view text, std::string_view record) {
  if (text.size() > kMaxXmlBytes) {
    return InvalidArgument("an XML answer of " + std::to_string(text.size()) +
                           " bytes is more than this reader takes");
  }
  // No network, no DTD loading, no entity substitution: only the document's own text.
  std::unique_ptr<xmlDoc, DocDeleter> doc(
      xmlReadMemory(text.data(), static_cast<int>(text.size()), "response.xml", nullptr,
                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (doc == nullptr) {
    const xmlError* e = xmlGetLastError();
    std::string why = e != nullptr && e->message != nullptr ? e->message : "malformed";
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    return InvalidArgument("not XML: " + why);
  }
  XmlRecords out;
  Walk(xmlDocGetRootElement(doc.get()), record, &out, 0);
  return out;
}

}  // namespace trainyard::assets
