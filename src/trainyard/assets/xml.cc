#include "trainyard/assets/xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <memory>
#include <mutex>

namespace trainyard::assets {
namespace {

// Listings are a few MB at most (5000 entries of a few hundred bytes).
constexpr size_t kMaxXmlBytes = 64u << 20;

struct DocDeleter {
  void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};
struct CtxtDeleter {
  void operator()(xmlParserCtxt* ctxt) const { xmlFreeParserCtxt(ctxt); }
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
  // libxml2 2.9 must be initialised once before threads parse at the same time.
  static std::once_flag init;
  std::call_once(init, [] { xmlInitParser(); });
  // No network, no DTD loading, no entity substitution: only the document's own text. Errors
  // come from this parse's own context, never another parse's.
  std::unique_ptr<xmlParserCtxt, CtxtDeleter> ctxt(xmlNewParserCtxt());
  if (ctxt == nullptr) return Internal("cannot make an XML parser");
  std::unique_ptr<xmlDoc, DocDeleter> doc(
      xmlCtxtReadMemory(ctxt.get(), text.data(), static_cast<int>(text.size()), "response.xml",
                        nullptr, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (doc == nullptr) {
    const xmlError* e = xmlCtxtGetLastError(ctxt.get());
    std::string why = e != nullptr && e->message != nullptr ? e->message : "malformed";
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    return InvalidArgument("not XML: " + why);
  }
  // Listings and errors never declare a document type; one that does is refused whole.
  if (doc->intSubset != nullptr || doc->extSubset != nullptr) {
    return InvalidArgument("not XML this reader takes: the document declares a DOCTYPE");
  }
  XmlRecords out;
  Walk(xmlDocGetRootElement(doc.get()), record, &out, 0);
  return out;
}

}  // namespace trainyard::assets
